"""The teacher's answer cache: the cache key of a request and the append-only JSON-lines file of answers.

The key is the SHA-256 of the canonical JSON of everything that decides an answer; it must never change, or
every cache written before would be lost (``tests/test_teacher_cache_compat.py`` holds keys of the past). The
file holds one finished answer per line, flushed and fsynced as it is written, so a killed run loses nothing
and its rerun sends only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CACHE_SCHEMA = 1


def canonical_json(obj: Any) -> str:
    """Sorted keys, no spaces, UTF-8 kept: the form that is hashed into a key and written to the cache file."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def cache_key(model: str, messages: list[dict], temperature: float, max_tokens: int, sample: int = 0,
              **decoding) -> str:
    """SHA-256 of the canonical JSON of everything that decides the answer (the backend kind does not).

    ``sample`` numbers independent answers to the same request (:meth:`Teacher.complete_samples`); sample 0
    has exactly the key of a plain request, so a single answer already cached is reused as the first sample.
    ``decoding``: further settings that change the answer (repetition controls); only the ones that are set
    enter the key, so keys without them are unchanged."""
    blob = {"v": CACHE_SCHEMA, "model": model, "messages": messages, "temperature": float(temperature),
            "max_tokens": int(max_tokens), **{k: v for k, v in decoding.items() if v}}
    if sample:
        blob["sample"] = int(sample)
    return hashlib.sha256(canonical_json(blob).encode("utf-8")).hexdigest()


def cache_record(key: str, *, model: str, messages: list[dict], temperature: float, max_tokens: int, result: dict,
                 sample: int = 0) -> dict:
    """The line the cache file holds for one finished answer (``result``: text, finish_reason, token counts)."""
    rec = {
        "key": key, "model": model, "temperature": temperature, "max_tokens": max_tokens,
        "messages": messages, "text": result["text"], "finish_reason": result.get("finish_reason"),
        "prompt_tokens": result.get("prompt_tokens", 0), "completion_tokens": result.get("completion_tokens", 0),
        "time": round(time.time(), 3),
    }
    if sample:
        rec["sample"] = sample
    return rec


class TeacherCache:
    """Append-only JSONL: one finished answer per line, flushed and fsynced as it is written.

    The format is its own (canonical JSON per line, see :func:`canonical_json`), and so is its reader: a torn
    last line, left by a killed run, is cut off the file so the next append starts on a clean line; an
    unreadable line elsewhere is skipped with a warning. (:mod:`citing_trl.jsonl` writes with default
    separators and only skips torn lines, so the cache does not use it.)"""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self.records: dict[str, dict] = {}
        self._fh = None
        if self.path is not None:
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        keep = len(data)
        lines = data.split(b"\n")
        pos = 0
        for lineno, line in enumerate(lines, 1):
            start, pos = pos, pos + len(line) + 1
            if not line.strip():
                continue
            is_last = lineno == len(lines)  # no newline after it: possibly cut short by a crash
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or not all(isinstance(rec.get(f), str) for f in ("key", "text")):
                    raise ValueError("record lacks a string `key` and `text`")
            except ValueError as err:
                if is_last:
                    logger.warning("teacher cache %s: ignoring a truncated last line %d (%d bytes), probably from an "
                                   "interrupted run: %s", self.path, lineno, len(line), err)
                    keep = start  # cut it off so that the next append starts on a clean line
                else:
                    logger.warning("teacher cache %s: skipping unreadable line %d: %s", self.path, lineno, err)
                continue
            self.records[rec["key"]] = rec
        if keep < len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(keep)
        elif data and not data.endswith(b"\n"):
            with open(self.path, "ab") as fh:
                fh.write(b"\n")

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def add(self, records: list[dict], sync: bool = True) -> None:
        """Append records and flush them to the OS (that alone survives a killed process). With ``sync`` they
        are also fsynced (that survives a machine crash); ``sync=False`` leaves that to :meth:`fsync`, so a
        caller can fsync groups of records off its event loop."""
        for rec in records:
            self.records[rec["key"]] = rec
        if self.path is None or not records:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write("".join(canonical_json(r) + "\n" for r in records))
        self._fh.flush()
        self.dirty = True
        if sync:
            self.fsync()

    dirty = False

    def fsync(self) -> None:
        fh = self._fh
        if fh is not None:
            self.dirty = False
            os.fsync(fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclass(frozen=True)
class Completion:
    """A teacher answer as cached: its text, why generation stopped ("stop", "length", ...) and token counts."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int

    @classmethod
    def from_record(cls, record: dict) -> Completion:
        return cls(record["text"], record.get("finish_reason"), record.get("prompt_tokens", 0),
                   record.get("completion_tokens", 0))
