"""What a teacher backend is given and what it must do.

The :class:`~citing_trl.teacher.Teacher` works out which answers are missing (cache, in-batch dedup) and hands
them to a backend as :class:`Job` records. The backend only produces answers. Everything it may touch comes in
one :class:`BackendContext`: the settings, the usage ledger, read access to the cache, and three verbs —
:meth:`~BackendContext.store` an answer as soon as it exists, :meth:`~BackendContext.describe` a request in an
error or log line, and :meth:`~BackendContext.fail` when some request failed for good.

A new backend is a :class:`TeacherBackend` subclass with a ``name`` (the ``--backend`` value), optionally a
``mode`` other than ``live``, and a ``run`` method; it is registered in :mod:`citing_trl.teacher.backends`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NoReturn

from citing_trl.teacher.cache import TeacherCache, cache_record
from citing_trl.teacher.errors import TeacherError
from citing_trl.teacher.ledger import UsageLedger


def prompt_preview(messages: list[dict], width: int = 60) -> str:
    """The last user message on one line, cut to ``width`` characters (for error and log lines)."""
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

    def sample_of(self, key: str) -> int:
        """The sample number of ``key`` (0 for a key this job does not list)."""
        return self.samples[self.keys.index(key)] if key in self.keys else 0


class BackendContext:
    """The public interface between the :class:`~citing_trl.teacher.Teacher` and its backend.

    ``config`` (the :class:`~citing_trl.teacher.TeacherConfig`), ``ledger`` and ``cache`` are the teacher's own (a backend counts what it sends and retries in
    the ledger, reads the cache to skip what is already answered, and fsyncs it); ``preloaded`` is the
    ``(model, tokenizer)`` pair given to the teacher, or ``(None, None)``."""

    def __init__(self, config, cache: TeacherCache, ledger: UsageLedger,
                 preloaded: tuple = (None, None)):
        self.config = config
        self.cache = cache
        self.ledger = ledger
        self.preloaded = preloaded

    @property
    def cache_path(self) -> Path | None:
        return self.cache.path

    def store(self, job: Job, key: str, result: dict, *, sync: bool = True, bill_prompt: bool = True,
              batch: bool = False) -> None:
        """Cache one finished answer (``result``: text, finish_reason, prompt_tokens, completion_tokens) and
        count it. ``sync=False`` leaves the fsync to a later ``cache.fsync()``; ``bill_prompt=False`` for the
        second and later choices of one call, whose prompt was paid for once; ``batch`` for answers from the
        Batch API (half price)."""
        record = cache_record(key, model=self.config.model, messages=job.messages, temperature=job.temperature,
                              max_tokens=job.max_tokens, result=result, sample=job.sample_of(key))
        self.cache.add([record], sync=sync)
        ledger = self.ledger
        ledger.completed += 1
        prompt = result.get("prompt_tokens", 0) if bill_prompt else 0
        ledger.prompt_tokens += prompt
        ledger.completion_tokens += result.get("completion_tokens", 0)
        if batch:
            ledger.batch_prompt_tokens += prompt
            ledger.batch_completion_tokens += result.get("completion_tokens", 0)

    def describe(self, job: Job, key: str) -> str:
        """How an error or log line names one request: its position in the caller's batch, its sample, the
        start of its cache key and of its prompt."""
        sample = job.sample_of(key)
        which = f"teacher request #{job.index}" + (f" sample {sample}" if sample else "")
        return f"{which} (key {key[:12]}, prompt {prompt_preview(job.messages)!r})"

    def fail(self, jobs: list[Job], errors: list[TeacherError],
             redact: Callable[[str], str] | None = None) -> NoReturn:
        """Raise one :class:`TeacherError` for the first of ``errors`` (sorted by the caller), saying what else
        failed or is unfinished; ``redact`` (see :mod:`citing_trl.teacher.secrets`) cleans the message."""
        first = errors[0]
        extra = []
        if len(errors) > 1:
            extra.append(f"{len(errors) - 1} other request(s) failed too")
        left = sum(1 for job in jobs for k in job.keys if self.cache.get(k) is None) - len(errors)
        if left > 0:
            extra.append(f"{left} request(s) were not finished")
        if self.cache_path is not None:
            extra.append(f"finished answers are cached in {self.cache_path}; a rerun sends only the rest")
        message = str(first) + ("; " + "; ".join(extra) if extra else "")
        if redact is not None:
            message = redact(message)
        raise TeacherError(message, index=first.index, key=first.key, reason=first.reason)


class TeacherBackend:
    """How answers are produced. ``run(jobs, desc)`` produces the answer of every key of every job, hands each
    to ``context.store`` as soon as it exists, and ends with ``context.fail(...)`` when some failed for good.

    ``name`` is the value of ``TeacherConfig.backend`` that selects it and ``mode`` the value of
    ``TeacherConfig.mode``; ``summary`` says in a few words what it talks to (used in messages)."""

    name: ClassVar[str] = "?"
    mode: ClassVar[str] = "live"
    summary: ClassVar[str] = ""

    def __init__(self, context: BackendContext):
        self.context = context
        self.config = context.config
        self.ledger = context.ledger

    @classmethod
    def preflight(cls, config) -> bool:
        """Before anything expensive: check that this backend can answer ``config`` (a
        :class:`~citing_trl.teacher.TeacherConfig`) without asking it, and raise a user error if not. True when
        that check is enough; False (the default) makes :meth:`citing_trl.teacher.Teacher.preflight` send one
        tiny request instead."""
        return False

    @classmethod
    def decoding_key(cls, config) -> dict:
        """Settings of ``config`` beyond temperature and max_tokens that change this backend's answers, for the
        cache key (:func:`~citing_trl.teacher.cache.cache_key` leaves out those that are None or 0)."""
        return {}

    def run(self, jobs: list[Job], desc: str) -> None:  # pragma: no cover
        raise NotImplementedError
