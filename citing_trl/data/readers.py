"""Reading raw rows from local files, each with the place it came from.

Every row a loader sees is wrapped in a :class:`Row` that knows its origin (a file or a Hub id) and its
location in it (``row 7``, ``line 12``, ``data[0].paragraphs[3].qas[1]``), so a bad field is reported as
``<file>: <where>: field 'answers.text' is missing`` instead of a bare ``KeyError``.

:func:`read_file` accepts the layouts the public data sets ship in: JSON lines, a JSON list, an object with a
``data`` list, and the original nested SQuAD layout (flattened here to one row per question, as on the Hub).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from citing_trl.errors import DataError
from citing_trl.jsonl import iter_jsonl

_MISSING = object()
_KIND_NAMES = {str: "a string", list: "a list", dict: "an object", bool: "a boolean", int: "an integer"}


class Row:
    """One raw row and where it came from, so that every error names the file, the row and the field."""

    def __init__(self, data: object, origin: str, where: str, prefix: str = ""):
        if not isinstance(data, dict):
            raise DataError(f"{origin}: {where}: expected an object, got {type(data).__name__}")
        self.data, self.origin, self.where, self.prefix = data, origin, where, prefix

    def fail(self, key: str, problem: str) -> DataError:
        return DataError(f"{self.origin}: {self.where}: field {self.prefix + key!r} {problem}")

    def get(self, key: str, kind: type, default=_MISSING):
        value = self.data.get(key)
        if value is None:
            if default is not _MISSING:
                return default
            raise self.fail(key, "is missing")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(key, f"must be {_KIND_NAMES[kind]}, got {type(value).__name__} {str(value)[:40]!r}")
        return value

    def text(self, key: str, default=_MISSING) -> str:
        return self.get(key, str, default)

    def texts(self, key: str, nonempty: bool = False) -> list[str]:
        values = self.get(key, list)
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise self.fail(f"{key}[{i}]", f"must be a string, got {type(v).__name__}")
        if nonempty and not values:
            raise self.fail(key, "is empty")
        return values

    def sub(self, key: str) -> Row:
        return Row(self.get(key, dict), self.origin, self.where, f"{self.prefix}{key}.")


def is_local(path: str | Path) -> bool:
    """Whether ``path`` names a local data file by its suffix (``.json``/``.jsonl``)."""
    return Path(path).suffix in (".json", ".jsonl")


def flatten_squad(articles: list, origin: str) -> Iterator[tuple[str, object]]:
    """The original nested SQuAD layout -> one Hub-style flat row per question."""
    for a, article in enumerate(articles):
        for p, para in enumerate(Row(article, origin, f"data[{a}]").get("paragraphs", list)):
            para = Row(para, origin, f"data[{a}].paragraphs[{p}]")
            for q, qa in enumerate(para.get("qas", list)):
                where = f"data[{a}].paragraphs[{p}].qas[{q}]"
                qa = Row(qa, origin, where)
                spans = [Row(s, origin, where, "answers.") for s in qa.get("answers", list, [])]
                yield where, {
                    "id": qa.data.get("id"), "title": article.get("title", ""), "context": para.data.get("context"),
                    "question": qa.data.get("question"), "is_impossible": qa.data.get("is_impossible"),
                    "answers": {"text": [s.text("text") for s in spans]},
                }


def read_file(path: Path) -> Iterator[tuple[str, object]]:
    """(location, raw row) pairs from a .jsonl file, a .json list, a {"data": [...]} object or nested SQuAD."""
    origin = str(path)
    if path.suffix not in (".json", ".jsonl"):
        raise DataError(f"{origin}: unsupported file type (expected .json or .jsonl)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{origin}: cannot read file ({err})") from None
    if path.suffix == ".jsonl":
        yield from iter_jsonl(text, origin)
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg != "Extra data":
            raise DataError(f"{origin}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
        yield from iter_jsonl(text, origin)  # JSON lines saved as .json (e.g. Dataset.to_json)
        return
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
        if data and all(isinstance(a, dict) and "paragraphs" in a for a in data):
            yield from flatten_squad(data, origin)
            return
    if not isinstance(data, list):
        raise DataError(f"{origin}: expected a JSON list of rows (or an object with a 'data' list)")
    for i, row in enumerate(data, 1):
        yield f"row {i}", row
