"""The one teacher client of the project: rubric design, teacher revisions and the judge all go through it.

:class:`Teacher` owns the cache, the usage ledger, in-batch dedup and resume; small backends behind one
interface (:class:`TeacherBackend`) produce the answers:

- :class:`OpenAIBackend` (``backend="openai"``): live requests to any OpenAI-compatible server (OpenAI itself,
  vLLM, ``transformers serve``, ...), with bounded concurrency. It retries rate limits (429), server errors
  (5xx), dropped connections, timeouts and garbled response bodies with exponential backoff and full jitter,
  and waits at least as long as a ``Retry-After`` header asks. Other 4xx errors are not retried. Several
  samples of one request (:meth:`Teacher.complete_samples`) are asked for with ``n`` where the server honours it.
- :class:`BatchBackend` (``backend="openai", mode="batch"``): the OpenAI Batch API at half price, resumable.
- :class:`LocalBackend` (``backend="local"``): in-process generation with a causal LM
  (:func:`citing_trl.generation.generate`).

Every finished answer is appended to a JSONL cache on disk (flushed and fsynced record by record), so a
finished request is never sent again, whether the process is rerun or was killed. The API key is read from
the environment variable named by :attr:`TeacherConfig.api_key_env` when the client is built and is never
stored, logged, cached or put into an error message.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CACHE_SCHEMA = 1
RETRYABLE_STATUS = {408, 409, 425, 429}  # plus every 5xx


# --------------------------------------------------------------------------------------------------
# Configuration, errors, usage ledger
# --------------------------------------------------------------------------------------------------


@dataclass
class TeacherConfig:
    """How the teacher model is reached. Shared by rubric design, teacher revisions and the judge."""

    backend: str = field(
        default="local",
        metadata={"help": "`local` (in-process generation with a causal LM) or `openai` (any OpenAI-compatible "
                          "chat completions server)."},
    )
    model: str = field(
        default="embedded",
        metadata={"help": "For `openai`: the served model name, exactly as the server expects it. For `local`: a "
                          "model folder, a Hub id, or `embedded` (SmolLM2-135M-Instruct shipped in a wheel)."},
    )
    base_url: str | None = field(
        default=None,
        metadata={"help": "OpenAI-compatible base URL ending in `/v1` (e.g. `http://127.0.0.1:8000/v1`); None uses "
                          "the OpenAI API."},
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "NAME of the environment variable that holds the API key (the key itself is only read "
                          "from the environment, never stored or logged). When it is unset the dummy key `EMPTY` "
                          "is sent, which local servers accept."},
    )
    max_concurrency: int = field(default=8, metadata={"help": "Most requests in flight at once (`openai`)."})
    max_retries: int = field(
        default=6, metadata={"help": "Retries per request after the first attempt, for retryable failures."}
    )
    timeout: float = field(default=120.0, metadata={"help": "Seconds one attempt may take before it is abandoned."})
    backoff_base: float = field(
        default=1.0,
        metadata={"help": "Backoff before retry n is uniform in [0, min(backoff_max, backoff_base * 2**(n-1))] "
                          "seconds (full jitter). A `Retry-After` header from the server is always honoured, even "
                          "beyond backoff_max."},
    )
    backoff_max: float = field(default=60.0, metadata={"help": "Upper bound of the jittered backoff, in seconds."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature; 0 asks for greedy decoding."})
    max_tokens: int = field(default=512, metadata={"help": "Most completion tokens per request."})
    local_batch_size: int = field(default=8, metadata={"help": "Prompts per forward pass (`local`)."})
    repetition_penalty: float = field(
        default=1.0, metadata={"help": "`local`: penalty on tokens the answer already holds (1.0 = off); see "
                                       "citing_trl.generation.GenerationConfig. Part of the cache key when set."},
    )
    no_repeat_ngram_size: int = field(
        default=0, metadata={"help": "`local`: never repeat an n-gram of this size within an answer (0 = off). Part "
                                     "of the cache key when set."},
    )
    price_prompt_per_1m: float = field(
        default=0.0, metadata={"help": "Price per million prompt tokens, for the ledger's cost estimate."}
    )
    price_completion_per_1m: float = field(
        default=0.0, metadata={"help": "Price per million completion tokens, for the ledger's cost estimate."}
    )
    mode: str = field(
        default="live",
        metadata={"help": "`live` (one request per answer, answers at once) or `batch` (`openai` backend only: the "
                          "OpenAI Batch API at half the price, answers within its 24h window; the batch id is saved "
                          "next to the cache so a killed run polls the same batch instead of submitting again)."},
    )
    batch_poll_interval: float = field(default=30.0, metadata={"help": "Seconds between status polls of a batch."})
    batch_retry: str = field(
        default="live",
        metadata={"help": "What happens to batch lines that failed or expired: `live` (sent as live requests) or "
                          "`batch` (submitted again in a new batch, up to batch_max_rounds batches in all)."},
    )
    batch_max_rounds: int = field(default=3, metadata={"help": "Most batch rounds per call with batch_retry=batch."})
    batch_max_requests: int = field(
        default=50000, metadata={"help": "Most lines per batch file (OpenAI's limit is 50,000); more are split."}
    )
    fail_fast: bool = field(
        default=True,
        metadata={"help": "After the first request fails for good, start no new requests and stop retrying the "
                          "others (answers already in flight are still cached). False keeps going and reports "
                          "every failure at the end."},
    )

    def __post_init__(self):
        """Each rule names the field as a flag; a prefixed view (``--teacher_*``, ``--judge_*``) renames it."""
        from citing_trl.cli import check, check_choice

        check_choice("backend", self.backend, ("local", "openai"))
        check_choice("mode", self.mode, ("live", "batch"))
        check(self.mode == "live" or self.backend == "openai", "mode",
              "'batch' needs backend 'openai' (the Batch API of an OpenAI-compatible server)", self.mode)
        check_choice("batch_retry", self.batch_retry, ("live", "batch"))
        check(bool(self.model and str(self.model).strip()), "model", "must not be empty", self.model)
        if self.base_url is not None:
            check(self.base_url.startswith(("http://", "https://")), "base_url",
                  "must be an http(s) URL such as http://127.0.0.1:8000/v1", self.base_url)
        for name in ("max_concurrency", "max_tokens", "local_batch_size", "batch_max_rounds", "batch_max_requests"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name,
                  "must be a whole number >= 1", value)
        for name in ("max_retries", "backoff_base", "backoff_max", "temperature", "price_prompt_per_1m",
                     "price_completion_per_1m"):
            check(getattr(self, name) >= 0, name, "must be >= 0", getattr(self, name))
        for name in ("timeout", "batch_poll_interval", "repetition_penalty"):
            check(getattr(self, name) > 0, name, "must be > 0", getattr(self, name))
        check(self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size", "must be >= 0 (0 = off)",
              self.no_repeat_ngram_size)


class TeacherError(RuntimeError):
    """A teacher request failed for good. The message names the request (index in the batch, short cache key,
    start of the prompt) and the reason; ``index``, ``key`` and ``reason`` hold the same facts."""

    def __init__(self, message: str, *, index: int | None = None, key: str | None = None, reason: str = ""):
        super().__init__(message)
        self.index = index
        self.key = key
        self.reason = reason


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


@dataclass
class UsageLedger:
    """What the teacher did and roughly what it cost; accumulates over every ``complete`` call."""

    requests: int = 0  # requests asked for (cache hits and in-batch duplicates included)
    cache_hits: int = 0  # answered from the cache without sending anything
    deduplicated: int = 0  # identical to an earlier request of the same batch, answered by that one's send
    requests_sent: int = 0  # distinct requests handed to the backend
    completed: int = 0  # of those, answered
    failures: int = 0  # of those, failed for good (retries spent or not retryable)
    abandoned: int = 0  # not sent, or not retried, because an earlier request failed (fail_fast)
    attempts: int = 0  # HTTP calls / generation slots, retries included
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)  # failed attempts by kind: "429", "500", "timeout", ...
    # Batch API (mode=batch): batches created, lines submitted, lines that failed or expired (then retried),
    # of those the ones sent live, and the tokens answered through a batch (billed at half price).
    batches_submitted: int = 0
    batch_lines: int = 0
    batch_failed_lines: int = 0
    batch_expired_lines: int = 0
    batch_retried_live: int = 0
    batch_prompt_tokens: int = 0
    batch_completion_tokens: int = 0
    price_prompt_per_1m: float = 0.0
    price_completion_per_1m: float = 0.0

    @property
    def estimated_cost(self) -> float:
        prompt = (self.prompt_tokens - 0.5 * self.batch_prompt_tokens) * self.price_prompt_per_1m
        completion = (self.completion_tokens - 0.5 * self.batch_completion_tokens) * self.price_completion_per_1m
        return (prompt + completion) / 1e6

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["errors"] = dict(sorted(self.errors.items()))
        out["estimated_cost"] = round(self.estimated_cost, 6)
        out["wall_seconds"] = round(self.wall_seconds, 3)
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.summary(), indent=2) + "\n")
        return path

    def print(self, console=None, title: str = "Teacher usage") -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, show_header=True)
        table.add_column("item")
        table.add_column("value", justify="right")
        for name, value in self.summary().items():
            if name.startswith("price_") or (name.startswith("batch") and not self.batch_lines):
                continue
            if name == "errors":
                value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
            elif name == "estimated_cost":
                value = f"{value:.4f}"
            table.add_row(name.replace("_", " "), str(value))
        (console or Console()).print(table)


# --------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------


def canonical_json(obj: Any) -> str:
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


class _Cache:
    """Append-only JSONL: one finished answer per line, flushed and fsynced as it is written."""

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


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _prompt_preview(messages: list[dict], width: int = 60) -> str:
    users = [m for m in messages if m.get("role") == "user"] or messages
    text = " ".join(str(users[-1].get("content", "")).split()) if users else ""
    return text if len(text) <= width else text[: width - 1] + "…"


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


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date. None if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds)


class _Malformed(Exception):
    pass


class _Attempt(Exception):
    """One failed attempt, classified."""

    def __init__(self, kind: str, detail: str, retryable: bool, retry_after: float | None = None):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.retryable = retryable
        self.retry_after = retry_after


def _parse_choices(body: str, redact=lambda text: text) -> list[dict]:
    """One result (text, finish reason, token counts) per choice of a chat completion body, in choice order;
    `_Malformed` when it is not one. The usage block counts all choices together: every choice carries the
    prompt's token count (billed once per call), and the completion tokens are shared out evenly (their sum
    is the exact total)."""
    excerpt = redact(body)[:80]
    try:
        data = json.loads(body)
    except ValueError as err:
        raise _Malformed(f"response body is not JSON ({err.msg}): {excerpt!r}") from None
    if not isinstance(data, dict):
        raise _Malformed(f"response body is not a JSON object: {excerpt!r}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
        raise _Malformed(f"response has no choices: {excerpt!r}")
    choices = sorted(choices, key=lambda c: c.get("index") if isinstance(c.get("index"), int) else 0)
    results = []
    for choice in choices:
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise _Malformed(f"response choice has no text content: {excerpt!r}")
        results.append({"text": content, "finish_reason": choice.get("finish_reason")})
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    share, extra = divmod(completion, len(results))
    for pos, result in enumerate(results):
        result["prompt_tokens"] = prompt
        result["completion_tokens"] = share + (1 if pos < extra else 0)
    return results


# --------------------------------------------------------------------------------------------------
# Teacher
# --------------------------------------------------------------------------------------------------


class Teacher:
    """Batch chat completions with caching, retries and a usage ledger.

    >>> teacher = Teacher(TeacherConfig(backend="openai", model="gpt-4o-mini"), cache_path="runs/teacher.jsonl")
    >>> texts = teacher.complete([[{"role": "user", "content": "Say hi."}]])

    The cache key is (``config.model``, messages, temperature, max_tokens): with a preloaded local ``model``,
    give ``config.model`` a name that identifies it, or answers of different models would share the cache.
    When a request fails for good the error names the lowest-numbered failed request of the batch.
    """

    def __init__(self, config: TeacherConfig, cache_path: str | Path | None = None, model=None, tokenizer=None):
        self.config = config
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self._cache = _Cache(self.cache_path)
        self._preloaded = (model, tokenizer)
        self._backend: TeacherBackend | None = None
        if (model is None) != (tokenizer is None):
            raise ValueError("Teacher: pass both `model` and `tokenizer` for a preloaded local teacher, or neither")
        self.ledger = UsageLedger(
            price_prompt_per_1m=config.price_prompt_per_1m, price_completion_per_1m=config.price_completion_per_1m
        )

    # ------------------------------------------------------------------ public
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
        """Decoding settings beyond temperature/max_tokens that change answers, for :func:`cache_key` (the
        repetition controls apply to the local backend only; an OpenAI-compatible server is not sent them)."""
        if self.config.backend != "local":
            return {}
        return {"repetition_penalty": self.config.repetition_penalty if self.config.repetition_penalty != 1.0 else None,
                "no_repeat_ngram_size": self.config.no_repeat_ngram_size or None}

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
        pending: dict[str, _Job] = {}  # key of sample 0 -> the job of its first occurrence
        for i, sample_keys in enumerate(keys):
            missing = [j for j, key in enumerate(sample_keys) if self._cache.get(key) is None]
            self.ledger.cache_hits += num_samples - len(missing)
            if not missing:
                continue
            if sample_keys[0] in pending:
                self.ledger.deduplicated += len(missing)
            else:
                pending[sample_keys[0]] = _Job(i, list(requests[i]), [sample_keys[j] for j in missing], missing,
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
        if self._backend is None:
            kind = {"local": LocalBackend, "openai": OpenAIBackend}[self.config.backend]
            if self.config.mode == "batch":
                kind = BatchBackend
            self._backend = kind(self)
        return self._backend

    @property
    def _model(self):  # the local backend's model (None until it is needed)
        return getattr(self._backend, "model", None) if self._backend is not None else self._preloaded[0]

    def _store(self, job: _Job, key: str, result: dict, *, sync: bool = True, bill_prompt: bool = True,
               batch: bool = False) -> None:
        """Cache one finished answer and count it. ``bill_prompt=False`` for the second and later choices of
        one call, whose prompt was paid for once; ``batch`` for answers from the Batch API (half price)."""
        sample = job.samples[job.keys.index(key)] if key in job.keys else 0
        self._cache.add([self._record(key, job, result, sample)], sync=sync)
        self.ledger.completed += 1
        prompt = result.get("prompt_tokens", 0) if bill_prompt else 0
        self.ledger.prompt_tokens += prompt
        self.ledger.completion_tokens += result.get("completion_tokens", 0)
        if batch:
            self.ledger.batch_prompt_tokens += prompt
            self.ledger.batch_completion_tokens += result.get("completion_tokens", 0)

    def _record(self, key: str, job: _Job, result: dict, sample: int = 0) -> dict:
        rec = {
            "key": key, "model": self.config.model, "temperature": job.temperature, "max_tokens": job.max_tokens,
            "messages": job.messages, "text": result["text"], "finish_reason": result.get("finish_reason"),
            "prompt_tokens": result.get("prompt_tokens", 0), "completion_tokens": result.get("completion_tokens", 0),
            "time": round(time.time(), 3),
        }
        if sample:
            rec["sample"] = sample
        return rec

    def _describe(self, index: int, key: str, messages: list[dict], sample: int = 0) -> str:
        which = f"teacher request #{index}" + (f" sample {sample}" if sample else "")
        return f"{which} (key {key[:12]}, prompt {_prompt_preview(messages)!r})"

    def _fail(self, jobs: list[_Job], errors: list[TeacherError], secret: str = "") -> None:
        """Raise one :class:`TeacherError` for the lowest-numbered failure, saying what else is unfinished."""
        first = errors[0]
        extra = []
        if len(errors) > 1:
            extra.append(f"{len(errors) - 1} other request(s) failed too")
        left = sum(1 for job in jobs for k in job.keys if self._cache.get(k) is None) - len(errors)
        if left > 0:
            extra.append(f"{left} request(s) were not finished")
        if self.cache_path is not None:
            extra.append(f"finished answers are cached in {self.cache_path}; a rerun sends only the rest")
        message = str(first) + ("; " + "; ".join(extra) if extra else "")
        if secret:
            message = message.replace(secret, "***")
        raise TeacherError(message, index=first.index, key=first.key, reason=first.reason)


@dataclass
class _Job:
    """One distinct request with the cache keys of the samples still missing (``samples[i]`` numbers ``keys[i]``)."""

    index: int  # first position of the request in the caller's batch
    messages: list[dict]
    keys: list[str]
    samples: list[int]
    temperature: float
    max_tokens: int


# --------------------------------------------------------------------------------------------------
# Backends: each turns jobs into answers and hands every answer to Teacher._store as soon as it arrives.
# --------------------------------------------------------------------------------------------------


class TeacherBackend:
    """How answers are produced. The :class:`Teacher` owns the cache, ledger, dedup and resume logic; a backend
    only produces the answers of the jobs it is given, stores each through ``teacher._store`` as soon as it
    exists, and raises :class:`TeacherError` (via ``teacher._fail``) when some failed for good."""

    name = "?"

    def __init__(self, teacher: Teacher):
        self.teacher = teacher
        self.config = teacher.config
        self.ledger = teacher.ledger

    def run(self, jobs: list[_Job], desc: str) -> None:  # pragma: no cover
        raise NotImplementedError


class LocalBackend(TeacherBackend):
    """In-process generation with a causal LM through :func:`citing_trl.generation.generate`. Sample j of every
    request is drawn in one pass seeded with j, so samples are reproducible for the same batch."""

    name = "local"

    def __init__(self, teacher: Teacher):
        super().__init__(teacher)
        self.model, self.tokenizer = teacher._preloaded

    def run(self, jobs: list[_Job], desc: str) -> None:
        from citing_trl.generation import GenerationConfig, generate

        if self.model is None:
            from citing_trl.models import load_model

            logger.info("loading local teacher %s", self.config.model)
            self.model, self.tokenizer = load_model(self.config.model)
        units = [(job, key, sample) for job in jobs for key, sample in zip(job.keys, job.samples)]
        done: set[str] = set()
        self.ledger.requests_sent += len(units)
        self.ledger.attempts += len(units)
        try:
            for sample in sorted({u[2] for u in units}):
                part = [u for u in units if u[2] == sample]
                temperature, max_tokens = part[0][0].temperature, part[0][0].max_tokens
                gen_config = GenerationConfig(
                    max_new_tokens=max_tokens, batch_size=self.config.local_batch_size, do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else 1.0, seed=sample,
                    repetition_penalty=self.config.repetition_penalty,
                    no_repeat_ngram_size=self.config.no_repeat_ngram_size,
                )

                def on_batch(indices: list[int], generations, part=part) -> None:
                    for pos, gen in zip(indices, generations):
                        job, key, _ = part[pos]
                        result = {"text": gen.text, "finish_reason": gen.finish_reason,
                                  "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens}
                        self.teacher._store(job, key, result, sync=False)
                        done.add(key)
                    self.teacher._cache.fsync()

                label = desc if sample == 0 else f"{desc} (sample {sample})"
                generate(self.model, self.tokenizer, [u[0].messages for u in part], gen_config, desc=label,
                         on_batch=on_batch)
        except Exception as err:
            unfinished = [u for u in units if u[1] not in done]
            self.ledger.failures += len(unfinished)
            self.ledger.count_error("local")
            job, key, sample = unfinished[0] if unfinished else units[0]
            reason = f"local generation with {self.config.model!r} failed: {type(err).__name__}: {err}"
            raise TeacherError(
                f"{self.teacher._describe(job.index, key, job.messages, sample)} and {max(len(unfinished) - 1, 0)} "
                f"other unfinished request(s): {reason}", index=job.index, key=key, reason=reason,
            ) from err


class OpenAIBackend(TeacherBackend):
    """Live requests to an OpenAI-compatible chat completions server with bounded concurrency, retries with
    jittered exponential backoff (``Retry-After`` honoured) and ``n`` for several samples of one request."""

    name = "openai"

    def __init__(self, teacher: Teacher):
        super().__init__(teacher)
        self.n_supported: bool | None = None  # None until a call with n > 1 shows whether the server honours it

    def run(self, jobs: list[_Job], desc: str) -> None:
        secret = os.environ.get(self.config.api_key_env) or ""

        def run() -> list[TeacherError]:
            return asyncio.run(self._run_async(jobs, desc))

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            errors = run()
        else:  # called from inside an event loop (e.g. a notebook): run ours in a worker thread
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                errors = pool.submit(run).result()
        if errors:
            self.teacher._fail(jobs, errors, secret)

    def client(self):
        import openai

        secret = os.environ.get(self.config.api_key_env) or ""
        return openai.AsyncOpenAI(api_key=secret or "EMPTY", base_url=self.config.base_url, max_retries=0,
                                  timeout=self.config.timeout)

    async def _run_async(self, jobs: list[_Job], desc: str) -> list[TeacherError]:
        import openai
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        cfg = self.config
        teacher = self.teacher
        secret = os.environ.get(cfg.api_key_env) or ""
        client = self.client()

        def redact(text: str) -> str:  # a server may echo the key back in an error body
            return text.replace(secret, "***") if secret else text
        semaphore = asyncio.Semaphore(cfg.max_concurrency)
        stop = asyncio.Event()
        errors: list[TeacherError] = []
        ledger = self.ledger
        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"), transient=False,
        )
        task = progress.add_task(desc, total=sum(len(job.keys) for job in jobs), note="")

        def note() -> str:
            parts = []
            if ledger.retries:
                parts.append(f"retries {ledger.retries}")
            if errors:
                parts.append(f"failed {len(errors)}")
            return ", ".join(parts)

        async def attempt(job: _Job, n: int) -> list[dict]:
            extra = {"n": n} if n > 1 else {}
            try:
                # The SDK applies `timeout` to connecting, sending and each wait for response bytes; the outer
                # bound also covers a server that trickles bytes forever (with slack for the SDK's first-call
                # set-up, which runs inside the coroutine).
                raw = await asyncio.wait_for(
                    client.chat.completions.with_raw_response.create(
                        model=cfg.model, messages=job.messages, max_tokens=job.max_tokens,
                        temperature=job.temperature, **extra,
                    ),
                    timeout=cfg.timeout + max(5.0, cfg.timeout),
                )
                results = _parse_choices(raw.http_response.text, redact)
                for result in results:
                    result["text"] = redact(result["text"])
                return results
            except (asyncio.TimeoutError, openai.APITimeoutError):
                raise _Attempt("timeout", f"no answer within {cfg.timeout:g}s", True) from None
            except openai.APIStatusError as err:
                status = err.status_code
                retryable = status in RETRYABLE_STATUS or status >= 500
                header = err.response.headers.get("retry-after") if err.response is not None else None
                retry_after = parse_retry_after(header)
                if retry_after is None and err.response is not None:
                    ms = err.response.headers.get("retry-after-ms")
                    try:
                        retry_after = float(ms) / 1000 if ms is not None else None
                    except ValueError:
                        retry_after = None
                detail = f"HTTP {status}: {redact(' '.join(str(err.message).split()))[:300]}"
                raise _Attempt(str(status), detail, retryable, retry_after) from None
            except openai.APIConnectionError as err:
                cause = err.__cause__ or err
                detail = redact(f"connection error: {type(cause).__name__}: {cause}")[:300]
                raise _Attempt("connection", detail, True) from None
            except _Malformed as err:
                raise _Attempt("malformed", str(err), True) from None

        # Records are written and flushed at once (a killed process loses nothing); fsync, which can take
        # milliseconds, runs in a worker thread, one call covering every record written before it started.
        syncer: asyncio.Task | None = None

        async def fsync_loop() -> None:
            while teacher._cache.dirty:
                await asyncio.to_thread(teacher._cache.fsync)

        def schedule_fsync() -> None:
            nonlocal syncer
            if syncer is None or syncer.done():
                syncer = asyncio.create_task(fsync_loop())

        async def one(job: _Job) -> None:
            async with semaphore:
                if stop.is_set():
                    ledger.abandoned += len(job.keys)
                    return
                ledger.requests_sent += len(job.keys)
                todo = list(zip(job.keys, job.samples))
                tries = 0
                while todo:
                    n = len(todo) if len(todo) > 1 and self.n_supported is not False else 1
                    key, sample = todo[0]
                    tries += 1
                    ledger.attempts += 1
                    try:
                        results = await attempt(job, n)
                    except _Attempt as fail:
                        if n > 1 and not fail.retryable:
                            # the server refuses `n`: ask for the samples one at a time from now on
                            self.n_supported = False
                            ledger.count_error("n_refused")
                            logger.info("the teacher server refused n=%d (%s); sending one request per sample", n,
                                        fail.detail)
                            tries -= 1
                            continue
                        ledger.count_error(fail.kind)
                        described = teacher._describe(job.index, key, job.messages, sample)
                        if not fail.retryable or tries > cfg.max_retries:
                            if fail.retryable:
                                why = f"{fail.detail} (gave up after {tries} attempts)"
                            else:
                                why = f"{fail.detail} (not retryable)"
                            ledger.failures += len(todo)
                            err = TeacherError(f"{described} failed: {why}", index=job.index, key=key, reason=why)
                            errors.append(err)
                            logger.error("%s", err)
                            if cfg.fail_fast:
                                stop.set()
                            progress.update(task, note=note())
                            return
                        if stop.is_set():
                            ledger.abandoned += len(todo)
                            return
                        delay = random.uniform(0, min(cfg.backoff_max, cfg.backoff_base * 2 ** (tries - 1)))
                        if fail.retry_after is not None:  # the server knows best: never come back earlier
                            delay = max(delay, fail.retry_after + random.uniform(0, 0.1 * fail.retry_after))
                        ledger.retries += 1
                        logger.info("%s: %s; retry %d/%d in %.2fs", described, fail.detail, tries, cfg.max_retries,
                                    delay)
                        progress.update(task, note=note())
                        try:
                            await asyncio.wait_for(stop.wait(), timeout=delay)
                        except asyncio.TimeoutError:
                            continue
                        ledger.abandoned += len(todo)  # another request failed for good meanwhile (fail_fast)
                        return
                    got = results[:n]
                    if n > 1:
                        if len(got) < n and self.n_supported is not False:
                            logger.info("the teacher server answered %d of n=%d choices; sending one request per "
                                        "sample from now on", len(got), n)
                        self.n_supported = len(got) == n
                    for pos, ((k, _), result) in enumerate(zip(todo, got)):
                        teacher._store(job, k, result, sync=False, bill_prompt=pos == 0)
                    schedule_fsync()
                    todo = todo[len(got):]
                    tries = 0
                    progress.advance(task, len(got))

        try:
            with progress:
                await asyncio.gather(*(one(job) for job in jobs))
        finally:
            if syncer is not None:
                await asyncio.gather(syncer, return_exceptions=True)
            teacher._cache.fsync()
            await client.close()
        errors.sort(key=lambda e: e.index if e.index is not None else -1)
        return errors


def _estimate_tokens(messages: list[dict]) -> int:
    """Rough prompt size for the cost estimate: ~4 characters per token plus a few per message."""
    return sum(len(m.get("content", "")) // 4 + 4 for m in messages)


class BatchBackend(TeacherBackend):
    """The OpenAI Batch API: one JSONL of the missing answers (``custom_id`` = cache key) is uploaded, submitted
    to ``/v1/chat/completions`` with a 24h window, polled, and its results go into the teacher's cache.

    Resume: before anything is uploaded the batch's lines are written next to the cache, and every step
    (file uploaded, batch created with a ``metadata`` submission id, collected) is recorded in
    ``<cache>.batches.json`` at once. A rerun after a crash or kill polls the recorded batch; a crash between
    creating the batch and recording its id is healed by finding the batch by its submission id, so a batch is
    never submitted twice. Failed and expired lines are sent live (``batch_retry=live``) or in a new batch.
    """

    name = "batch"
    TERMINAL = ("completed", "failed", "expired", "cancelled")

    def __init__(self, teacher: Teacher):
        super().__init__(teacher)
        cache = teacher.cache_path
        self.state_path = cache.with_name(cache.stem + ".batches.json") if cache is not None else None
        if self.state_path is None:
            logger.warning("batch teacher without a cache path: a killed run cannot find its batch again")
        self.entries: list[dict] = self._load_state()
        self._client = None

    # ---------------------------------------------------------------- state on disk
    def _load_state(self) -> list[dict]:
        if self.state_path is None or not self.state_path.exists():
            return []
        try:
            return list(json.loads(self.state_path.read_text())["batches"])
        except (ValueError, KeyError, TypeError) as err:
            raise TeacherError(f"batch teacher: cannot read the batch state {self.state_path} ({err}); it records the "
                               "batches already submitted, fix or remove it (removing it may submit them again)",
                               reason=str(err)) from None

    def _save_state(self) -> None:
        if self.state_path is None:
            return
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"batches": self.entries}, indent=1) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_path)

    def _lines_path(self, entry: dict) -> Path | None:
        if self.state_path is None:
            return None
        return self.state_path.with_name(f"{self.state_path.stem}.{entry['submission']}.jsonl")

    # ---------------------------------------------------------------- API helpers
    def client(self):
        if self._client is None:
            import openai

            secret = os.environ.get(self.config.api_key_env) or ""
            self._client = openai.OpenAI(api_key=secret or "EMPTY", base_url=self.config.base_url,
                                         max_retries=self.config.max_retries, timeout=self.config.timeout)
        return self._client

    def _api(self, step: str, entry: dict | None, call):
        import openai

        try:
            return call()
        except openai.OpenAIError as err:
            secret = os.environ.get(self.config.api_key_env) or ""
            detail = " ".join(str(err).split())[:300]
            if secret:
                detail = detail.replace(secret, "***")
            where = f" (batch {entry.get('batch_id') or entry['submission']})" if entry else ""
            state = f"; the batch state is in {self.state_path}, a rerun resumes from it" if self.state_path else ""
            raise TeacherError(f"batch teacher: {step}{where} failed: {type(err).__name__}: {detail}{state}",
                               reason=detail) from None

    # ---------------------------------------------------------------- run
    def run(self, jobs: list[_Job], desc: str) -> None:
        units = {key: job for job in jobs for key in job.keys}
        cached = self.teacher._cache.get
        self.ledger.requests_sent += len(units)
        rounds = 0
        for entry in [e for e in self.entries if not e.get("collected") and set(e["keys"]) & units.keys()]:
            logger.info("%s: resuming batch %s from %s", desc, entry.get("batch_id") or entry["submission"],
                        self.state_path)
            self._finish(entry, units, desc)
            rounds = 1
        while True:
            missing = [k for k in units if cached(k) is None]
            if not missing or rounds >= (self.config.batch_max_rounds if self.config.batch_retry == "batch" else 1):
                break
            rounds += 1
            for start in range(0, len(missing), self.config.batch_max_requests):
                entry = self._submit(missing[start: start + self.config.batch_max_requests], units, desc)
                self._finish(entry, units, desc)
        missing = [k for k in units if cached(k) is None]
        if not missing:
            return
        if self.config.batch_retry == "live":
            live_jobs = [_Job(job.index, job.messages, [k for k in job.keys if cached(k) is None],
                              [s for k, s in zip(job.keys, job.samples) if cached(k) is None], job.temperature,
                              job.max_tokens) for job in jobs if any(cached(k) is None for k in job.keys)]
            self.ledger.batch_retried_live += sum(len(j.keys) for j in live_jobs)
            self.ledger.requests_sent -= sum(len(j.keys) for j in live_jobs)  # the live backend counts them again
            logger.warning("%s: %d batch line(s) failed or expired; sending them as live requests (full price)", desc,
                           len(missing))
            OpenAIBackend(self.teacher).run(live_jobs, f"{desc} (live retry)")
            return
        key = missing[0]
        job = units[key]
        why = f"no answer after {rounds} batch round(s) (failed or expired lines)"
        self.ledger.failures += len(missing)
        self.teacher._fail(jobs, [TeacherError(
            f"{self.teacher._describe(job.index, key, job.messages, job.samples[job.keys.index(key)])} failed: {why}",
            index=job.index, key=key, reason=why)])

    def _submit(self, keys: list[str], units: dict[str, _Job], desc: str) -> dict:
        import uuid

        cfg = self.config
        lines = []
        for key in keys:
            job = units[key]
            body = {"model": cfg.model, "messages": job.messages, "max_tokens": job.max_tokens,
                    "temperature": job.temperature}
            lines.append({"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body})
        data = "".join(canonical_json(line) + "\n" for line in lines).encode("utf-8")
        prompt = sum(_estimate_tokens(units[k].messages) for k in keys)
        completion = sum(units[k].max_tokens for k in keys)
        self._print_estimate(desc, len(keys), prompt, completion)
        entry = {"submission": uuid.uuid4().hex, "keys": keys, "input_file_id": None, "batch_id": None,
                 "status": "writing", "collected": False, "created": round(time.time(), 3)}
        path = self._lines_path(entry)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        else:
            entry["lines"] = data.decode("utf-8")
        self.entries.append(entry)
        self._save_state()
        self._create(entry, data)
        return entry

    def _create(self, entry: dict, data: bytes | None = None) -> None:
        """Upload the lines (unless already uploaded) and create the batch; each step is saved at once."""
        client = self.client()
        if entry["input_file_id"] is None:
            if data is None:
                path = self._lines_path(entry)
                data = path.read_bytes() if path is not None else entry["lines"].encode("utf-8")
            name = f"citing-teacher-{entry['submission']}.jsonl"
            uploaded = self._api("upload", entry, lambda: client.files.create(file=(name, data), purpose="batch"))
            entry["input_file_id"] = uploaded.id
            entry["status"] = "uploaded"
            self._save_state()
        batch = self._api("create", entry, lambda: client.batches.create(
            input_file_id=entry["input_file_id"], endpoint="/v1/chat/completions", completion_window="24h",
            metadata={"citing_submission": entry["submission"]},
        ))
        entry["batch_id"] = batch.id
        entry["status"] = batch.status
        self._save_state()
        self.ledger.batches_submitted += 1
        self.ledger.batch_lines += len(entry["keys"])
        logger.info("submitted batch %s (%d lines); its id is saved in %s", batch.id, len(entry["keys"]),
                    self.state_path)

    def _adopt(self, entry: dict) -> bool:
        """Find a batch created for this submission whose id never reached the state file."""
        client = self.client()
        page = self._api("list", entry, lambda: client.batches.list(limit=100))
        for batch in page.data:
            if (batch.metadata or {}).get("citing_submission") == entry["submission"]:
                entry["batch_id"] = batch.id
                entry["status"] = batch.status
                self._save_state()
                logger.info("found batch %s of submission %s on the server", batch.id, entry["submission"])
                return True
        return False

    def _print_estimate(self, desc: str, n: int, prompt: int, completion: int) -> None:
        from rich.console import Console

        cfg = self.config
        half_p, half_c = cfg.price_prompt_per_1m / 2, cfg.price_completion_per_1m / 2
        cost = (prompt * half_p + completion * half_c) / 1e6
        if half_p or half_c:
            money = f"estimated cost at most {cost:.4f} (batch price: half of {cfg.price_prompt_per_1m:g} / " \
                    f"{cfg.price_completion_per_1m:g} per 1M prompt / completion tokens)"
        else:
            money = "no prices set (teacher price_prompt_per_1m / price_completion_per_1m) for a cost estimate"
        Console(stderr=True).print(f"[bold]{desc}[/bold]: submitting a batch of {n} request(s), ~{prompt} prompt "
                                   f"tokens, at most {completion} completion tokens; {money}")

    def _finish(self, entry: dict, units: dict[str, _Job], desc: str) -> None:
        if entry["batch_id"] is None and not self._adopt(entry):
            self._create(entry)
        batch = self._poll(entry, desc)
        self._collect(entry, batch, units)

    def _poll(self, entry: dict, desc: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        client = self.client()
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[status]}"), transient=False)
        with progress:
            task = progress.add_task(f"{desc} (batch {entry['batch_id']})", total=len(entry["keys"]), status="")
            while True:
                batch = self._api("poll", entry, lambda: client.batches.retrieve(entry["batch_id"]))
                counts = batch.request_counts
                done = (counts.completed + counts.failed) if counts is not None else 0
                failed = f", {counts.failed} failed" if counts is not None and counts.failed else ""
                progress.update(task, completed=done, status=f"{batch.status}{failed}")
                if batch.status != entry["status"]:
                    entry["status"] = batch.status
                    self._save_state()
                if batch.status in self.TERMINAL:
                    return batch
                time.sleep(self.config.batch_poll_interval)

    def _download(self, entry: dict, file_id: str | None) -> list[dict]:
        if not file_id:
            return []
        client = self.client()
        text = self._api("download", entry, lambda: client.files.content(file_id).text)
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                logger.warning("batch %s: file %s line %d is not JSON; it counts as failed", entry["batch_id"],
                               file_id, n)
        return rows

    def _collect(self, entry: dict, batch, units: dict[str, _Job]) -> None:
        secret = os.environ.get(self.config.api_key_env) or ""

        def redact(text: str) -> str:
            return text.replace(secret, "***") if secret else text

        foreign = None  # lines of this batch that the current call did not ask for (an earlier call's)
        answered: set[str] = set()
        for row in self._download(entry, batch.output_file_id):
            key = row.get("custom_id")
            response = row.get("response") or {}
            if key not in entry["keys"] or response.get("status_code") != 200:
                continue
            try:
                result = _parse_choices(json.dumps(response.get("body")), redact)[0]
            except _Malformed as err:
                logger.warning("batch %s line %s: %s; it counts as failed", entry["batch_id"], key[:12], err)
                continue
            result["text"] = redact(result["text"])
            job = units.get(key)
            if job is None:
                foreign = foreign if foreign is not None else self._input_jobs(entry)
                job = foreign.get(key)
                if job is None:
                    continue
            if self.teacher._cache.get(key) is None:
                self.teacher._store(job, key, result, sync=False, batch=True)
            answered.add(key)
        errors = {row.get("custom_id"): row for row in self._download(entry, batch.error_file_id)}
        self.teacher._cache.fsync()
        unanswered = [k for k in entry["keys"] if k not in answered]
        failed = [k for k in unanswered if k in errors or batch.status in ("failed", "cancelled")]
        self.ledger.batch_failed_lines += len(failed)
        self.ledger.batch_expired_lines += len(unanswered) - len(failed)
        for key in failed[:3]:
            detail = errors.get(key, {})
            why = (detail.get("error") or (detail.get("response") or {}).get("body") or batch.status)
            logger.warning("batch %s line %s failed: %s", entry["batch_id"], key[:12], redact(str(why))[:200])
        if unanswered:
            logger.warning("batch %s ended %s: %d answered, %d failed, %d expired", entry["batch_id"], batch.status,
                           len(answered), len(failed), len(unanswered) - len(failed))
        entry["collected"] = True
        entry["answered"] = len(answered)
        self._save_state()
        path = self._lines_path(entry)
        if path is not None and path.exists():
            path.unlink()

    def _input_jobs(self, entry: dict) -> dict[str, _Job]:
        path = self._lines_path(entry)
        text = path.read_text() if path is not None and path.exists() else entry.get("lines", "")
        out = {}
        for line in text.splitlines():
            row = json.loads(line)
            body = row["body"]
            out[row["custom_id"]] = _Job(-1, body["messages"], [row["custom_id"]], [0], body["temperature"],
                                         body["max_tokens"])
        return out
