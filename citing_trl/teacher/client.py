"""Teacher: the one teacher client of the project (rubric design, teacher revisions and the judge).

It owns the cache, the usage ledger, in-batch dedup and resume; a backend (:mod:`citing_trl.teacher.backends`)
only produces the answers it is asked for.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from citing_trl.teacher.backends import BackendContext, Job, TeacherBackend, backend_class
from citing_trl.teacher.cache import Completion, TeacherCache, cache_key
from citing_trl.teacher.config import TeacherConfig
from citing_trl.teacher.ledger import UsageLedger

logger = logging.getLogger(__name__)


def _validate(requests: Sequence[list[dict]]) -> None:
    if isinstance(requests, (str, dict)):
        raise ValueError("Teacher.complete expects a sequence of requests, each a list of chat messages")
    for i, req in enumerate(requests):
        if not isinstance(req, list) or not req:
            raise ValueError(f"teacher request #{i} must be a non-empty list of {{'role', 'content'}} messages, "
                             f"got {type(req).__name__}")
        for j, m in enumerate(req):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ValueError(f"teacher request #{i}, message {j}: expected a dict with string 'role' and "
                                 f"'content', got {m!r:.120}")


class Teacher:
    """Batch chat completions with caching, retries and a usage ledger.

    >>> teacher = Teacher(TeacherConfig(backend="openai", model="gpt-4o-mini"), cache_path="runs/teacher.jsonl")
    >>> texts = teacher.complete([[{"role": "user", "content": "Say hi."}]])

    The cache key is (``config.model``, messages, temperature, max_tokens, and the decoding settings the backend
    names in :meth:`decoding_key`): with a preloaded local ``model``, give ``config.model`` a name that
    identifies it, or answers of different models would share the cache. When a request fails for good the
    error names the lowest-numbered failed request of the batch.

    The backend is the class registered for ``(config.backend, config.mode)`` in
    :mod:`citing_trl.teacher.backends`; it gets a :class:`~citing_trl.teacher.backends.BackendContext`, never
    the Teacher itself.
    """

    def __init__(self, config: TeacherConfig, cache_path: str | Path | None = None, model=None, tokenizer=None):
        self.config = config
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self._cache = TeacherCache(self.cache_path)
        self._preloaded = (model, tokenizer)
        self._backend: TeacherBackend | None = None
        if (model is None) != (tokenizer is None):
            raise ValueError("Teacher: pass both `model` and `tokenizer` for a preloaded local teacher, or neither")
        self.ledger = UsageLedger(
            price_prompt_per_1m=config.price_prompt_per_1m, price_completion_per_1m=config.price_completion_per_1m
        )

    # ------------------------------------------------------------------ public
    @classmethod
    def preflight(cls, config: TeacherConfig, cache_path: str | Path | None = None) -> None:
        """Fail in seconds, not after hours of training, when the teacher cannot answer: the backend's own check
        (:meth:`~citing_trl.teacher.backends.TeacherBackend.preflight`, e.g. a local model's config loads), else
        one tiny request through a quick copy of ``config`` (one retry, short timeout; cached in ``cache_path``,
        so a rerun sends nothing). Raises the backend's user error or a :class:`TeacherError`."""
        if backend_class(config.backend, config.mode).preflight(config):
            return
        quick = dataclasses.replace(config, max_retries=1, backoff_base=0.5, backoff_max=2.0,
                                    timeout=min(config.timeout, 30.0))
        probe = [[{"role": "user", "content": "Reply with the single word OK."}]]
        with cls(quick, cache_path=cache_path) as teacher:
            teacher.complete(probe, desc="teacher check", max_tokens=4)

    def complete(
        self,
        requests: Sequence[list[dict]],
        *,
        desc: str = "teacher",
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> list[str]:
        """One completion text per chat-message list, in order (see :meth:`complete_detailed`)."""
        return [c.text for c in self.complete_detailed(requests, desc=desc, max_tokens=max_tokens, temperature=temperature)]

    def complete_detailed(
        self,
        requests: Sequence[list[dict]],
        *,
        desc: str = "teacher",
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> list[Completion]:
        """One :class:`Completion` (text, finish_reason, token counts) per chat-message list, in order.

        Cached answers are not sent again and identical requests in the batch are sent once. Raises
        :class:`TeacherError` when a request fails for good; every request that finished before that is
        already in the cache, so a rerun only sends the rest.
        """
        return [s[0] for s in self._complete(requests, 1, desc, max_tokens, temperature)]

    def complete_samples(
        self,
        requests: Sequence[list[dict]],
        num_samples: int,
        *,
        desc: str = "teacher samples",
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> list[list[Completion]]:
        """``num_samples`` independent answers per chat-message list: ``out[i][j]`` is sample j of request i.

        Each sample has its own cache key, and sample 0 has exactly the key :meth:`complete_detailed` uses at
        the same temperature and max_tokens (so a cached single answer is reused as sample 0, and a rerun sends
        nothing). The ``openai`` backend asks for the missing samples of a request in one call with ``n``; a
        server that answers fewer choices or refuses ``n`` gets one request per sample from then on. The
        ``local`` backend draws sample j with seed j. At temperature 0 every sample is the greedy answer.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"Teacher.complete_samples: num_samples must be an integer >= 1, got {num_samples!r}")
        return self._complete(requests, num_samples, desc, max_tokens, temperature)

    def decoding_key(self) -> dict:
        """Decoding settings beyond temperature/max_tokens that change answers, for :func:`cache_key`; the backend
        says which (the repetition controls apply to the local backend only; an OpenAI-compatible server is not
        sent them). Settings left at their "off" value are None, so they do not enter the key."""
        return backend_class(self.config.backend, self.config.mode).decoding_key(self.config)

    def close(self) -> None:
        self._cache.close()

    def __enter__(self) -> Teacher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ cache, dedup, ledger
    def _complete(self, requests, num_samples, desc, max_tokens, temperature) -> list[list[Completion]]:
        _validate(requests)
        max_tokens = self.config.max_tokens if max_tokens is None else int(max_tokens)
        temperature = self.config.temperature if temperature is None else float(temperature)
        started = time.perf_counter()
        decoding = self.decoding_key()
        keys = [[cache_key(self.config.model, list(req), temperature, max_tokens, sample=j, **decoding)
                 for j in range(num_samples)]
                for req in requests]
        self.ledger.requests += len(keys) * num_samples
        pending: dict[str, Job] = {}  # key of sample 0 -> the job of its first occurrence
        for i, sample_keys in enumerate(keys):
            missing = [j for j, key in enumerate(sample_keys) if self._cache.get(key) is None]
            self.ledger.cache_hits += num_samples - len(missing)
            if not missing:
                continue
            if sample_keys[0] in pending:
                self.ledger.deduplicated += len(missing)
            else:
                pending[sample_keys[0]] = Job(i, list(requests[i]), [sample_keys[j] for j in missing], missing,
                                               temperature, max_tokens)
        try:
            if pending:
                jobs = list(pending.values())
                logger.info("%s: %d request(s) x %d sample(s), %d answer(s) to get, the rest cached or repeated", desc,
                            len(keys), num_samples, sum(len(job.keys) for job in jobs))
                self.backend.run(jobs, desc)
        finally:
            self.ledger.wall_seconds += time.perf_counter() - started
        return [[Completion.from_record(self._cache.get(k)) for k in sample_keys]  # type: ignore[arg-type]
                for sample_keys in keys]

    @property
    def backend(self) -> TeacherBackend:
        """The backend registered for ``(config.backend, config.mode)``, built on first use."""
        if self._backend is None:
            kind = backend_class(self.config.backend, self.config.mode)
            self._backend = kind(BackendContext(self.config, self._cache, self.ledger, self._preloaded))
        return self._backend

    def release_model(self) -> None:
        """Let go of a model the backend loaded itself (the local teacher's weights), so that the memory is free
        while the caller trains; the next request loads it again. A model given to the constructor stays the
        caller's, and a backend without a model (a server) is kept."""
        if self._preloaded[0] is None and getattr(self._backend, "model", None) is not None:
            self._backend = None

    @property
    def _model(self):  # the local backend's model (None until it is needed)
        return getattr(self._backend, "model", None) if self._backend is not None else self._preloaded[0]
