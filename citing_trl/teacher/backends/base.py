"""What every backend shares: the Job record and the TeacherBackend interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from citing_trl.teacher.client import Teacher


def prompt_preview(messages: list[dict], width: int = 60) -> str:
    users = [m for m in messages if m.get("role") == "user"] or messages
    text = " ".join(str(users[-1].get("content", "")).split()) if users else ""
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass
class Job:
    """One distinct request with the cache keys of the samples still missing (``samples[i]`` numbers ``keys[i]``)."""

    index: int  # first position of the request in the caller's batch
    messages: list[dict]
    keys: list[str]
    samples: list[int]
    temperature: float
    max_tokens: int


class TeacherBackend:
    """How answers are produced. The :class:`Teacher` owns the cache, ledger, dedup and resume logic; a backend
    only produces the answers of the jobs it is given, stores each through ``teacher._store`` as soon as it
    exists, and raises :class:`TeacherError` (via ``teacher._fail``) when some failed for good."""

    name = "?"

    def __init__(self, teacher: Teacher):
        self.teacher = teacher
        self.config = teacher.config
        self.ledger = teacher.ledger

    def run(self, jobs: list[Job], desc: str) -> None:  # pragma: no cover
        raise NotImplementedError
