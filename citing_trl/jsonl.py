"""The one JSON-lines module: every .jsonl file the project reads or writes goes through here.

Two readers, for two kinds of file:

- :func:`iter_jsonl` is strict. It reads files a *user* gives (data, preference pairs, answers files): a line
  that is not JSON is an error naming the file and the line.
- :func:`read_jsonl` is tolerant. It reads files this project *appends to itself* (rollouts, revisions, caches,
  logs): a run killed mid-write can leave a torn last line, which is skipped with a warning so a rerun resumes.

Two writers: :func:`append_jsonl` (durable append, fsynced, mends a torn last line first) and
:func:`write_jsonl` (atomic whole-file write: temporary file, then rename).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from citing_trl.errors import DataError

logger = logging.getLogger(__name__)




def read_jsonl(path: str | Path) -> list[dict]:
    """Every record of a file this project wrote (``[]`` when it does not exist yet); a torn line is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s line %d is incomplete (interrupted write); ignoring it", path, n)
    return records


def append_jsonl(path: str | Path, records: Sequence[dict]) -> None:
    """Append records durably (flushed and fsynced), first ending a line a killed writer left half written."""
    path = Path(path)
    torn = False
    if path.exists() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"  # a killed writer left half a line: end it so ours starts clean
    with path.open("a", encoding="utf-8") as f:
        if torn:
            f.write("\n")
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: str | Path, records: Sequence[dict]) -> None:
    """Atomic whole-file write (temp file + rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def iter_jsonl(text: str, origin: str, error: type[Exception] | None = None) -> Iterator[tuple[str, object]]:
    """The strict JSON-lines reader shared by every input file a user gives (data, preference pairs, answers):
    yields ``("line N", value)`` per non-blank line; a line that is not JSON raises ``error`` (default
    :class:`DataError`) with one message naming the file and line. (Files this project appends to itself, such
    as caches, use tolerant readers that skip a torn last line instead.)"""
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield f"line {n}", json.loads(line)
            except json.JSONDecodeError as err:
                raise (error or DataError)(f"{origin}: line {n}: not valid JSON ({err.msg}, column {err.colno})") from None
