"""Instruction data for CITING (paper §4.1).

The paper trains on Alpaca (split 8:1:1 into train/validation/test) and evaluates zero-shot on three
families of public data sets, each a mixture:

* ``world_knowledge``       = NaturalQuestions-open + TriviaQA
* ``reading_comprehension`` = SQuAD v2 + QuAC + BoolQ
* ``commonsense``           = PIQA + OpenBookQA + CommonsenseQA

Every loader returns :class:`datasets.Dataset` rows in one schema, :data:`COLUMNS`:

``id``           stable string id (the data set's own id when it has one, else a hash of the text)
``instruction``  the task put to the model
``input``        optional context: passage, conversation, answer choices ("A. ...\\nB. ..."); may be ""
``output``       the reference answer y
``answers``      every gold answer, for scoring QA sets later; ``[output]`` for open-ended data (``[]`` for
                 a generic file without outputs). Unanswerable reading-comprehension questions have
                 ``output == answers[0] == NO_ANSWER``; multiple-choice rows have ``["B. text", "text"]``.
``source``       the data set the row came from ("alpaca", "nq_open", ...)

Each source is read either from the Hugging Face Hub (its default id, or another id you pass) or from a
local ``.json``/``.jsonl`` file holding the same rows; both go through the same converter. Split names are
``train``/``validation``/``test``; for Hub sources whose test labels are not public, ``test`` reads the
labelled validation split (see ``Source.splits``). A local file is a single split, so ``split`` only
matters for Hub ids and for Alpaca, which is split here.

Bad input raises :class:`DataError` naming the file, the row and the field. Rows whose instruction is
empty and exact duplicates (same instruction and input) are dropped, with the counts logged.

Held-out splits of single-file sources (:data:`FILE_SPLIT`). A local file given for a source
(``"boolq:boolq_dev.jsonl"``) is usually one split of the original data set (a dev set, a slice), yet
CITING trains on one part of it and evaluates on another. :func:`load_instructions` therefore divides such a
file itself: each row goes to train / validation / test by a seeded hash of its id,
``sha256(f"{seed}:{id}")`` read as a number in [0, 1), cut at 0.8 and 0.9 (8:1:1). The rule looks at the id
only, so a row lands in the same split whatever the file's order, the ``limit`` or the per-source caps, and
the three splits never share a row; the same seed always gives the same split. (Alpaca keeps its own seeded
8:1:1 shuffle; Hub ids use the data set's own splits; a plain file of instructions without a source prefix is
used whole, as the split you chose. Rows of one SQuAD/QuAC passage share a context but not a question, so a
passage may appear on both sides of the split; the questions do not.)

Mixtures for QA: ``"boolq:PATH+commonsense_qa:PATH+nq_open:PATH+squad_v2:PATH"`` joins several specs with
``+``; each part may end in ``@N`` to keep a seeded sample of at most N rows of that part's split
(``"boolq:boolq_dev.jsonl@100"``). The mixture is shuffled with the seed; ``limit`` then caps the whole.

Entry point for recipes: :func:`load_instructions` (see its docstring for the accepted specs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import datasets

from citing_trl.errors import DataError
from citing_trl.jsonl import iter_jsonl

logger = logging.getLogger(__name__)

COLUMNS = ["id", "instruction", "input", "output", "answers", "source"]
FEATURES = datasets.Features(
    {c: datasets.Sequence(datasets.Value("string")) if c == "answers" else datasets.Value("string") for c in COLUMNS}
)
NO_ANSWER = "The passage does not contain the answer."
KINDS = ("factual", "explanation", "analysis", "creative", "practical")  # paper Table 4, for the demo data
SPLITS = ("train", "validation", "test")


# --------------------------------------------------------------------------------------------------
# Reading raw rows with their location
# --------------------------------------------------------------------------------------------------

_MISSING = object()
_KIND_NAMES = {str: "a string", list: "a list", dict: "an object", bool: "a boolean", int: "an integer"}


class _Row:
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

    def sub(self, key: str) -> _Row:
        return _Row(self.get(key, dict), self.origin, self.where, f"{self.prefix}{key}.")


def _flatten_squad(articles: list, origin: str) -> Iterator[tuple[str, object]]:
    """The original nested SQuAD layout -> one Hub-style flat row per question."""
    for a, article in enumerate(articles):
        for p, para in enumerate(_Row(article, origin, f"data[{a}]").get("paragraphs", list)):
            para = _Row(para, origin, f"data[{a}].paragraphs[{p}]")
            for q, qa in enumerate(para.get("qas", list)):
                where = f"data[{a}].paragraphs[{p}].qas[{q}]"
                qa = _Row(qa, origin, where)
                spans = [_Row(s, origin, where, "answers.") for s in qa.get("answers", list, [])]
                yield where, {
                    "id": qa.data.get("id"), "title": article.get("title", ""), "context": para.data.get("context"),
                    "question": qa.data.get("question"), "is_impossible": qa.data.get("is_impossible"),
                    "answers": {"text": [s.text("text") for s in spans]},
                }


def _read_file(path: Path) -> Iterator[tuple[str, object]]:
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
            yield from _flatten_squad(data, origin)
            return
    if not isinstance(data, list):
        raise DataError(f"{origin}: expected a JSON list of rows (or an object with a 'data' list)")
    for i, row in enumerate(data, 1):
        yield f"row {i}", row


# --------------------------------------------------------------------------------------------------
# Converters: one raw row -> zero or more rows in instruction form
# --------------------------------------------------------------------------------------------------


def _question(q: str) -> str:
    q = q.strip()
    return q if not q or q[-1] in "?.!:" else q + "?"


def _ask(template: str, question: str) -> str:
    """Fill a template; a blank question gives an empty instruction (dropped and counted later)."""
    return template.format(q=_question(question)) if question.strip() else ""


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(s.strip() for s in items if s.strip()))


def _open_ended(r: _Row) -> dict:
    return {"instruction": r.text("instruction"), "input": r.text("input", ""), "output": r.text("output")}


def _generic(r: _Row) -> dict:
    out = r.text("output", "")
    row = {"instruction": r.text("instruction"), "input": r.text("input", ""), "output": out}
    row["answers"] = r.texts("answers") if "answers" in r.data else ([out] if out.strip() else [])
    for key in ("id", "source", "kind"):
        if r.text(key, ""):
            row[key] = r.text(key)
    return row


def _nq_open(r: _Row) -> dict:
    answers = r.texts("answer", nonempty=True)
    return {"instruction": _ask("Answer the following question: {q}", r.text("question")), "output": answers[0],
            "answers": answers}


def _trivia_qa(r: _Row) -> dict:
    answer = r.sub("answer")
    value = answer.text("value")
    return {"id": r.text("question_id", ""), "instruction": _ask("Answer the following question: {q}", r.text("question")),
            "output": value, "answers": [value, *answer.texts("aliases")] if "aliases" in answer.data else [value]}


_PASSAGE_QA = ("Answer the question using only the passage below. If the passage does not contain the answer, "
               f'reply "{NO_ANSWER}"\n\nQuestion: {{q}}')
_DIALOGUE_QA = _PASSAGE_QA.replace("the passage below", "the passage and the conversation below")


def _squad_v2(r: _Row) -> dict:
    spans = _unique(r.sub("answers").texts("text"))
    title = r.text("title", "").strip()
    context = r.text("context").strip()
    return {"id": r.text("id", ""), "instruction": _ask(_PASSAGE_QA, r.text("question")),
            "input": f"Title: {title}\nPassage: {context}" if title else f"Passage: {context}",
            "output": spans[0] if spans else NO_ANSWER, "answers": spans or [NO_ANSWER]}


_QUAC_NONE = "CANNOTANSWER"


def _quac_answer(text: str) -> str:
    return NO_ANSWER if text.strip() == _QUAC_NONE else text.strip()


def _quac(r: _Row) -> list[dict]:
    """One QuAC dialogue -> one row per turn; earlier turns are given as conversation history."""
    questions = r.texts("questions")
    orig = r.sub("orig_answers").texts("texts")
    if len(orig) != len(questions):
        raise r.fail("orig_answers.texts", f"has {len(orig)} entries but 'questions' has {len(questions)}")
    per_turn = r.data.get("answers") or {}
    if isinstance(per_turn, dict):  # Hub layout: {"texts": [[...] per turn], ...}
        per_turn = per_turn.get("texts") or []
    else:  # list of {"texts": [...]} per turn
        per_turn = [t.get("texts", []) if isinstance(t, dict) else [] for t in per_turn]
    turn_ids = r.data.get("turn_ids") or []
    dialogue = r.text("dialogue_id", "")
    context = r.text("context").strip().removesuffix(_QUAC_NONE).strip()
    title = " - ".join(t for t in (r.text("wikipedia_page_title", "").strip(), r.text("section_title", "").strip())
                       if t)
    background = r.text("background", "").strip()
    header = (f"Title: {title}\n" if title else "") + (f"Background: {background}\n" if background else "")
    header += f"Passage: {context}"
    rows, history = [], []
    for i, (question, answer) in enumerate(zip(questions, orig)):
        answer = _quac_answer(answer)
        extra = per_turn[i] if i < len(per_turn) and isinstance(per_turn[i], list) else []
        turn_id = turn_ids[i] if i < len(turn_ids) and isinstance(turn_ids[i], str) else f"{dialogue}_q#{i}"
        conversation = "\n\nConversation so far:\n" + "\n".join(history) if history else ""
        rows.append({"id": turn_id, "instruction": _ask(_DIALOGUE_QA, question), "input": header + conversation,
                     "output": answer, "answers": [answer, *(_quac_answer(a) for a in extra if isinstance(a, str))]})
        history.append(f"Q: {_question(question)}\nA: {answer}")
    return rows


def _boolq(r: _Row) -> dict:
    answer = "yes" if r.get("answer", bool) else "no"
    return {"instruction": _ask("Read the passage below and answer the question with yes or no.\n\nQuestion: {q}",
                                r.text("question")),
            "input": f"Passage: {r.text('passage').strip()}", "output": answer, "answers": [answer]}


def _choice_row(r: _Row, instruction: str, labels: list[str], texts: list[str], key: str, key_field: str) -> dict:
    if key not in labels:
        raise r.fail(key_field, f"is {key!r}, not one of the choice labels {', '.join(labels)}")
    text = texts[labels.index(key)].strip()
    return {"id": r.text("id", ""), "instruction": instruction,
            "input": "\n".join(f"{label}. {t.strip()}" for label, t in zip(labels, texts)),
            "output": f"{key}. {text}", "answers": [f"{key}. {text}", text]}


def _multiple_choice(stem_field: str) -> Callable[[_Row], dict]:
    def convert(r: _Row) -> dict:
        choices = r.sub("choices")
        labels, texts = choices.texts("label", nonempty=True), choices.texts("text")
        if len(labels) != len(texts):
            raise r.fail("choices", f"has {len(labels)} labels but {len(texts)} texts")
        question = r.text(stem_field)
        instruction = f"Choose the correct answer to the question below.\n\nQuestion: {question.strip()}"
        return _choice_row(r, instruction if question.strip() else "", labels, texts, r.text("answerKey").strip(),
                           "answerKey")
    return convert


def _piqa(r: _Row) -> dict:
    label = r.get("label", int)
    if label not in (0, 1):
        raise r.fail("label", f"must be 0 or 1, got {label} (hidden test labels cannot be used)")
    goal = r.text("goal").strip()
    instruction = f"Choose the better way to achieve the goal below.\n\nGoal: {goal}" if goal else ""
    return _choice_row(r, instruction, ["A", "B"], [r.text("sol1"), r.text("sol2")], "AB"[label], "label")


# --------------------------------------------------------------------------------------------------
# Sources and families
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a source lives on the Hub and how one of its rows becomes instruction rows."""

    hub_id: str
    convert: Callable[[_Row], dict | list[dict]]
    config: str | None = None
    splits: dict[str, str] = field(default_factory=lambda: {"test": "validation"})  # logical -> Hub split


SOURCES: dict[str, Source] = {
    "alpaca": Source("tatsu-lab/alpaca", _open_ended, splits={}),  # one Hub split, divided 8:1:1 here
    "nq_open": Source("google-research-datasets/nq_open", _nq_open),
    "trivia_qa": Source("mandarjoshi/trivia_qa", _trivia_qa, config="rc.nocontext"),
    "squad_v2": Source("rajpurkar/squad_v2", _squad_v2),
    "quac": Source("allenai/quac", _quac),
    "boolq": Source("google/boolq", _boolq),
    "piqa": Source("ybisk/piqa", _piqa),
    "openbookqa": Source("allenai/openbookqa", _multiple_choice("question_stem"), config="main", splits={}),
    "commonsense_qa": Source("tau/commonsense_qa", _multiple_choice("question")),
}
FAMILIES: dict[str, tuple[str, ...]] = {
    "alpaca": ("alpaca",),
    "world_knowledge": ("nq_open", "trivia_qa"),
    "reading_comprehension": ("squad_v2", "quac", "boolq"),
    "commonsense": ("piqa", "openbookqa", "commonsense_qa"),
}


def _is_local(path: str | Path) -> bool:
    return Path(path).suffix in (".json", ".jsonl")


def _raw_rows(name: str, path: str | Path | None, split: str) -> tuple[str, Iterator[tuple[str, object]]]:
    """(origin, rows) for a source from a local file or from the Hub."""
    if path is not None and (_is_local(path) or Path(path).is_file()):
        return str(path), _read_file(Path(path))
    spec = SOURCES[name]
    hub_id = str(path or spec.hub_id)
    config = spec.config if hub_id == spec.hub_id else None
    hub_split = spec.splits.get(split, split) if hub_id == spec.hub_id else split
    try:
        ds = datasets.load_dataset(hub_id, config, split=hub_split)
    except Exception as err:  # offline, unknown id, missing split...
        raise DataError(f"source {name!r}: cannot load {hub_id!r} (split {hub_split!r}) from the Hugging Face Hub "
                        f"({type(err).__name__}: {str(err)[:300]}); pass a local .json/.jsonl file for it") from err
    origin = f"{hub_id} [{hub_split}]"
    return origin, ((f"row {i}", row) for i, row in enumerate(ds, 1))


def _text_id(source: str, instruction: str, input: str) -> str:
    digest = hashlib.sha1("\x1f".join((instruction, input)).encode()).hexdigest()
    return f"{source}-{digest[:12]}"


def _finish(rows: Iterable[dict], origin: str, source: str, extra: tuple[str, ...] = ()) -> list[dict]:
    """Normalise rows to COLUMNS (+ extra), drop empty instructions and exact duplicates, log the counts."""
    out, seen, ids, empty, dupes = [], set(), set(), 0, 0
    for row in rows:
        instruction, input = row["instruction"].strip(), row.get("input", "").strip()
        if not instruction:
            empty += 1
            continue
        if (instruction, input) in seen:
            dupes += 1
            continue
        seen.add((instruction, input))
        output = row["output"].strip()
        rid = row.get("id") or _text_id(source, instruction, input)
        rid = rid if rid.startswith(f"{source}-") else f"{source}-{rid}"
        while rid in ids:  # keep ids unique even if a data set repeats one
            rid += "+"
        ids.add(rid)
        answers = _unique(row["answers"]) if "answers" in row else ([output] if output else [])
        out.append({"id": rid, "instruction": instruction, "input": input, "output": output,
                    "answers": answers, "source": row.get("source", source),
                    **{k: row[k] for k in extra}})
    if empty or dupes:
        logger.warning("%s: dropped %d row(s) with an empty instruction and %d duplicate row(s) (same instruction "
                       "and input); kept %d", origin, empty, dupes, len(out))
    else:
        logger.info("%s: loaded %d rows", origin, len(out))
    return out


def _convert(name: str, origin: str, raw: Iterable[tuple[str, object]], convert: Callable) -> list[dict]:
    rows = []
    for where, data in raw:
        produced = convert(_Row(data, origin, where))
        rows.extend(produced if isinstance(produced, list) else [produced])
    return _finish(rows, origin, name)


def _sample(rows: list, limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(rows):
        return rows
    if limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    return random.Random(seed).sample(rows, limit)


def _to_dataset(rows: list[dict], features: datasets.Features = FEATURES) -> datasets.Dataset:
    return datasets.Dataset.from_list(rows, features=features)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def _alpaca_rows(path_or_id: str | Path, seed: int) -> dict[str, list[dict]]:
    origin, raw = _raw_rows("alpaca", path_or_id, "train")
    rows = _convert("alpaca", origin, raw, _open_ended)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_val = n_test = round(len(rows) / 10)
    n_train = len(rows) - n_val - n_test
    cuts = {"train": order[:n_train], "validation": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    return {split: [rows[i] for i in idx] for split, idx in cuts.items()}


def load_alpaca(path_or_id: str | Path = "tatsu-lab/alpaca", seed: int = 42) -> datasets.DatasetDict:
    """Alpaca (a Hub id or a local JSON/JSONL of {instruction, input, output}) split 8:1:1 by ``seed``
    into train/validation/test (paper §4.2). The split is a seeded shuffle after de-duplication, so the
    three parts are disjoint and the same seed always gives the same split."""
    return datasets.DatasetDict({k: _to_dataset(v) for k, v in _alpaca_rows(path_or_id, seed).items()})


def _source_rows(name: str, path: str | Path | None, split: str, limit: int | None, seed: int) -> list[dict]:
    if name not in SOURCES:
        raise DataError(f"unknown source {name!r}; known sources: {', '.join(SOURCES)}")
    _check_split(split)
    if name == "alpaca":
        rows = _alpaca_rows(path or SOURCES["alpaca"].hub_id, seed)[split]
    else:
        origin, raw = _raw_rows(name, path, split)
        rows = _convert(name, origin, raw, SOURCES[name].convert)
    return _sample(rows, limit, seed)


def load_source(name: str, path: str | Path | None = None, split: str = "test", limit: int | None = None,
                seed: int = 42) -> datasets.Dataset:
    """One source (a key of :data:`SOURCES`) in instruction form.

    ``path``: a local .json/.jsonl file with the source's own rows, another Hub id, or None for the default
    Hub id. ``split``: train/validation/test (Hub only; Alpaca is split 8:1:1 here). ``limit``: keep a
    seeded random sample of at most this many rows.
    """
    return _to_dataset(_source_rows(name, path, split, limit, seed))


def load_family(name: str, paths: dict[str, str | Path] | None = None, caps: dict[str, int] | int | None = None,
                seed: int = 42, split: str = "test") -> datasets.Dataset:
    """A family of §4.1 (a key of :data:`FAMILIES`): its sources mixed and shuffled with ``seed``.

    ``paths`` maps a source to a local file (sources without one are read from the Hub); ``caps`` is a
    per-source row cap (an int for every source, or a dict by source). If a source can be read neither
    from a file nor from the Hub, a DataError names every such source: none is silently left out.
    """
    if name not in FAMILIES:
        raise DataError(f"unknown family {name!r}; known families: {', '.join(FAMILIES)}")
    members, paths = FAMILIES[name], dict(paths or {})
    for what, given in (("paths", paths), ("caps", caps if isinstance(caps, dict) else {})):
        if unknown := sorted(set(given) - set(members)):
            raise DataError(f"family {name!r}: {what} names {unknown}, which are not among its sources {list(members)}")
    rows, failures = [], []
    for source in members:
        cap = caps.get(source) if isinstance(caps, dict) else caps
        try:
            rows += _source_rows(source, paths.get(source), split, cap, seed)
        except DataError as err:
            if source in paths:
                raise
            failures.append(f"{source}: {err}")
    if failures:
        raise DataError(f"family {name!r}: {len(failures)} source(s) have no local file and could not be loaded "
                        "from the Hub; give them with paths={source: file}:\n  " + "\n  ".join(failures))
    random.Random(seed).shuffle(rows)
    return _to_dataset(rows)


def load_file(path: str | Path) -> datasets.Dataset:
    """A generic .json/.jsonl file of {instruction, input?, output?} rows (optional id, source, answers).
    ``source`` defaults to the file's stem; rows without an output get ``answers == []``."""
    path = Path(path)
    return _to_dataset(_convert(path.stem, str(path), _read_file(path), _generic))


DEMO_FILE = "demo_data/demo.jsonl"
DEMO_HELD_OUT = {"validation": 2, "test": 2}  # rows per kind, taken from the end of each kind's list


def _demo_split(rows: list[dict], split: str) -> list[dict]:
    """Fixed split of the demo set, the same on every machine: of each kind's rows in file order, the last
    ``DEMO_HELD_OUT["test"]`` are test, the ``DEMO_HELD_OUT["validation"]`` before them validation, the rest
    train (16 per kind -> 12/2/2, i.e. 60/10/10 rows), so training never sees a held-out row."""
    n_test, n_val = DEMO_HELD_OUT["test"], DEMO_HELD_OUT["validation"]
    out = []
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind]
        cut = len(mine) - n_test - n_val
        out += {"train": mine[:cut], "validation": mine[cut:cut + n_val], "test": mine[cut + n_val:]}[split]
    return out


def load_demo(split: str | None = None) -> datasets.Dataset:
    """The shipped demo set: 80 instructions, 16 for each kind of task in the paper's Table 4, with
    reference answers. Besides :data:`COLUMNS` it keeps one extra column, ``kind`` (one of :data:`KINDS`).
    ``split`` (train/validation/test) selects the fixed held-out split of :func:`_demo_split`; None = all."""
    origin = f"citing_trl/{DEMO_FILE}"
    text = resources.files("citing_trl").joinpath(DEMO_FILE).read_text(encoding="utf-8")
    rows = []
    for where, data in iter_jsonl(text, origin):
        r = _Row(data, origin, where)
        if r.text("kind") not in KINDS:
            raise r.fail("kind", f"is {r.data['kind']!r}, expected one of {', '.join(KINDS)}")
        rows.append(_generic(r) | {"output": r.text("output")})
    features = datasets.Features({**FEATURES, "kind": datasets.Value("string")})
    rows = _finish(rows, origin, "demo", extra=("kind",))
    if split is not None:
        _check_split(split)
        rows = _demo_split(rows, split)
    return _to_dataset(rows, features)


FILE_SPLIT = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}  # fractions of the id hash


def file_split_of(row_id: str, seed: int) -> str:
    """The split a row of a single-file source belongs to (see the module docstring): a seeded hash of its id."""
    point = int(hashlib.sha256(f"{seed}:{row_id}".encode()).hexdigest()[:15], 16) / 16**15
    return next(name for name, (lo, hi) in FILE_SPLIT.items() if lo <= point < hi)


def _split_file_rows(rows: list[dict], split: str, seed: int) -> list[dict]:
    return [r for r in rows if file_split_of(r["id"], seed) == split]


def _spec_rows(spec: str, split: str, seed: int) -> tuple[list[dict], datasets.Features]:
    """Rows of one (non-mixture) spec; see :func:`load_instructions`."""
    name, _, rest = spec.partition(":")
    if spec == "demo":
        demo = load_demo(split)
        return demo.to_list(), demo.features
    if spec in FAMILIES:
        return load_family(spec, seed=seed, split=split).to_list(), FEATURES
    if spec in SOURCES or (rest and name in SOURCES):
        if rest and name != "alpaca" and (_is_local(rest) or Path(rest).is_file()):
            return _split_file_rows(_source_rows(name, rest, "train", None, seed), split, seed), FEATURES
        return _source_rows(name, rest or None, split, None, seed), FEATURES
    if _is_local(spec):
        return load_file(spec).to_list(), FEATURES
    raise DataError(f"unknown data spec {spec!r}; expected 'demo', a family ({', '.join(FAMILIES)}), a source "
                    f"({', '.join(SOURCES)}), '<source>:<file>', a .json/.jsonl file, or several joined with '+'")


def _split_cap(part: str) -> tuple[str, int | None]:
    head, at, tail = part.rpartition("@")
    if not at or not tail.strip().isdigit():
        if at and not _is_local(part) and not Path(part).exists():
            raise DataError(f"data spec {part!r}: the per-source cap after '@' must be a whole number, got {tail!r}")
        return part, None
    return head, int(tail)


def local_files_in_spec(spec: str) -> list[str]:
    """The local .json/.jsonl files a spec names (for checking them before anything runs)."""
    out = []
    for part in spec.split("+"):
        part = part.strip()
        head, at, tail = part.rpartition("@")
        part = head if at and tail.isdigit() else part
        name, _, rest = part.partition(":")
        target = rest if rest and name in SOURCES else part
        if _is_local(target):
            out.append(target)
    return out


def load_instructions(spec: str, split: str = "train", limit: int | None = None, seed: int = 42) -> datasets.Dataset:
    """One entry point for recipes. ``spec`` is one of:

    * ``"demo"``: the shipped demo set (:func:`load_demo`, its fixed 60/10/10 ``split``; ``kind`` column kept);
    * a family name (``alpaca``, ``world_knowledge``, ``reading_comprehension``, ``commonsense``): from the Hub;
    * a source name (``nq_open``, ``squad_v2``, ...): that source from the Hub;
    * ``"<source>:<file or Hub id>"``, e.g. ``"alpaca:data/alpaca.json"`` (its 8:1:1 ``split``) or
      ``"squad_v2:dev-v2.0.json"`` (a file is split 8:1:1 by a seeded hash of the row id, see the module
      docstring; a Hub id uses its own splits);
    * a path to a ``.json``/``.jsonl`` file of {instruction, input?, output?} (used whole, as one split);
    * several of these joined with ``+``, each optionally capped with ``@N`` rows, e.g.
      ``"boolq:boolq_dev.jsonl@100+nq_open:nq_open_dev.jsonl@100"``: the parts' ``split`` rows, mixed and
      shuffled with ``seed``.

    ``limit`` keeps a seeded random sample of at most that many rows (of the whole mixture).
    """
    _check_split(split)
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    parts = [p.strip() for p in spec.split("+")] if "+" in spec else [spec]
    if len(parts) > 1 and not all(parts):
        raise DataError(f"data spec {spec!r}: empty part in a '+' mixture")
    rows, features, origins = [], FEATURES, set()
    for part in parts:
        part, cap = _split_cap(part) if len(parts) > 1 or "@" in part else (part, None)
        if part in origins:
            raise DataError(f"data spec {spec!r}: {part!r} appears twice")
        origins.add(part)
        part_rows, features = _spec_rows(part, split, seed)
        rows += _sample(part_rows, cap, seed)
    if len(parts) > 1:
        if features is not FEATURES:  # the demo's extra column cannot be mixed
            features = FEATURES
            rows = [{c: r[c] for c in COLUMNS} for r in rows]
        ids = [r["id"] for r in rows]
        if len(set(ids)) != len(ids):
            raise DataError(f"data spec {spec!r}: the parts share row ids; mix different sources")
        random.Random(seed).shuffle(rows)
    if spec == "demo":
        demo = _to_dataset(rows, features)
        return demo if limit is None else demo.select(sorted(_sample(list(range(len(demo))), limit, seed)))
    return _to_dataset(_sample(rows, limit, seed), features)
