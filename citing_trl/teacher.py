"""The one teacher client of the project: rubric design, teacher revisions and the judge all go through it.

Two backends answer a batch of chat-message lists with one completion each:

- ``openai``: any OpenAI-compatible server (OpenAI itself, vLLM, ``transformers serve``, ...), called with
  bounded concurrency. The client retries rate limits (429), server errors (5xx), dropped connections,
  timeouts and garbled response bodies with exponential backoff and full jitter, and waits at least as long
  as a ``Retry-After`` header asks. Other 4xx errors are not retried.
- ``local``: in-process generation with a causal LM (:func:`citing_trl.generation.generate`).

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
    fail_fast: bool = field(
        default=True,
        metadata={"help": "After the first request fails for good, start no new requests and stop retrying the "
                          "others (answers already in flight are still cached). False keeps going and reports "
                          "every failure at the end."},
    )

    def __post_init__(self):
        if self.backend not in ("local", "openai"):
            raise ValueError(f"TeacherConfig.backend must be 'local' or 'openai', got {self.backend!r}")
        for name in ("max_concurrency", "max_tokens", "local_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TeacherConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("max_retries", "backoff_base", "backoff_max", "temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"TeacherConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.repetition_penalty <= 0 or self.no_repeat_ngram_size < 0:
            raise ValueError("TeacherConfig.repetition_penalty must be > 0 and no_repeat_ngram_size >= 0")
        if self.timeout <= 0:
            raise ValueError(f"TeacherConfig.timeout must be > 0 seconds, got {self.timeout!r}")


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
    price_prompt_per_1m: float = 0.0
    price_completion_per_1m: float = 0.0

    @property
    def estimated_cost(self) -> float:
        prompt = self.prompt_tokens * self.price_prompt_per_1m
        return (prompt + self.completion_tokens * self.price_completion_per_1m) / 1e6

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
            if name.startswith("price_"):
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


def cache_key(model: str, messages: list[dict], temperature: float, max_tokens: int, **decoding) -> str:
    """SHA-256 of the canonical JSON of everything that decides the answer (the backend kind does not).
    ``decoding``: further settings that change the answer (repetition controls); only the ones that are set
    enter the key, so keys without them are unchanged."""
    blob = {"v": CACHE_SCHEMA, "model": model, "messages": messages, "temperature": float(temperature),
            "max_tokens": int(max_tokens), **{k: v for k, v in decoding.items() if v}}
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


def _parse_completion(body: str, redact=lambda text: text) -> dict:
    """Text, finish reason and usage from a chat completion body; `_Malformed` when it is not one."""
    excerpt = redact(body)[:80]
    try:
        data = json.loads(body)
    except ValueError as err:
        raise _Malformed(f"response body is not JSON ({err.msg}): {excerpt!r}") from None
    if not isinstance(data, dict):
        raise _Malformed(f"response body is not a JSON object: {excerpt!r}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _Malformed(f"response has no choices: {excerpt!r}")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise _Malformed(f"response choice has no text content: {excerpt!r}")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return {
        "text": content,
        "finish_reason": choices[0].get("finish_reason"),
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
    }


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
        self._model = model
        self._tokenizer = tokenizer
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
        _validate(requests)
        max_tokens = self.config.max_tokens if max_tokens is None else int(max_tokens)
        temperature = self.config.temperature if temperature is None else float(temperature)
        started = time.perf_counter()
        keys = [cache_key(self.config.model, list(req), temperature, max_tokens, **self.decoding_key()) for req in requests]
        self.ledger.requests += len(keys)
        pending: dict[str, int] = {}  # key -> index of its first occurrence
        for i, key in enumerate(keys):
            if self._cache.get(key) is not None:
                self.ledger.cache_hits += 1
            elif key in pending:
                self.ledger.deduplicated += 1
            else:
                pending[key] = i
        try:
            if pending:
                logger.info("%s: %d request(s), %d to send, the rest cached or repeated", desc, len(keys), len(pending))
                jobs = [(i, key, list(requests[i])) for key, i in pending.items()]
                if self.config.backend == "openai":
                    self._run_openai(jobs, desc, max_tokens, temperature)
                else:
                    self._run_local(jobs, desc, max_tokens, temperature)
        finally:
            self.ledger.wall_seconds += time.perf_counter() - started
        return [Completion.from_record(self._cache.get(k)) for k in keys]  # type: ignore[arg-type]

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

    # ------------------------------------------------------------------ shared
    def _record(self, key: str, messages: list[dict], temperature: float, max_tokens: int, result: dict) -> dict:
        return {
            "key": key, "model": self.config.model, "temperature": temperature, "max_tokens": max_tokens,
            "messages": messages, "text": result["text"], "finish_reason": result.get("finish_reason"),
            "prompt_tokens": result.get("prompt_tokens", 0), "completion_tokens": result.get("completion_tokens", 0),
            "time": round(time.time(), 3),
        }

    def _describe(self, index: int, key: str, messages: list[dict]) -> str:
        return f"teacher request #{index} (key {key[:12]}, prompt {_prompt_preview(messages)!r})"

    # ------------------------------------------------------------------ openai backend
    def _run_openai(self, jobs, desc, max_tokens, temperature) -> None:
        secret = os.environ.get(self.config.api_key_env) or ""

        def run() -> list[TeacherError]:
            return asyncio.run(self._openai_batch(jobs, desc, max_tokens, temperature))

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            errors = run()
        else:  # called from inside an event loop (e.g. a notebook): run ours in a worker thread
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                errors = pool.submit(run).result()
        if errors:
            first = errors[0]
            extra = []
            if len(errors) > 1:
                extra.append(f"{len(errors) - 1} other request(s) failed too")
            left = len(jobs) - sum(1 for _, k, _ in jobs if self._cache.get(k) is not None) - len(errors)
            if left:
                extra.append(f"{left} request(s) were not finished")
            if self.cache_path is not None:
                extra.append(f"finished answers are cached in {self.cache_path}; a rerun sends only the rest")
            message = str(first) + ("; " + "; ".join(extra) if extra else "")
            if secret:
                message = message.replace(secret, "***")
            raise TeacherError(message, index=first.index, key=first.key, reason=first.reason)

    async def _openai_batch(self, jobs, desc, max_tokens, temperature) -> list[TeacherError]:
        import openai
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        cfg = self.config
        secret = os.environ.get(cfg.api_key_env) or ""
        client = openai.AsyncOpenAI(
            api_key=secret or "EMPTY", base_url=cfg.base_url, max_retries=0, timeout=cfg.timeout
        )

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
        task = progress.add_task(desc, total=len(jobs), note="")

        def note() -> str:
            parts = []
            if ledger.retries:
                parts.append(f"retries {ledger.retries}")
            if errors:
                parts.append(f"failed {len(errors)}")
            return ", ".join(parts)

        async def attempt(messages: list[dict]) -> dict:
            try:
                # The SDK applies `timeout` to connecting, sending and each wait for response bytes; the outer
                # bound also covers a server that trickles bytes forever (with slack for the SDK's first-call
                # set-up, which runs inside the coroutine).
                raw = await asyncio.wait_for(
                    client.chat.completions.with_raw_response.create(
                        model=cfg.model, messages=messages, max_tokens=max_tokens, temperature=temperature
                    ),
                    timeout=cfg.timeout + max(5.0, cfg.timeout),
                )
                result = _parse_completion(raw.http_response.text, redact)
                result["text"] = redact(result["text"])
                return result
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
            while self._cache.dirty:
                await asyncio.to_thread(self._cache.fsync)

        def schedule_fsync() -> None:
            nonlocal syncer
            if syncer is None or syncer.done():
                syncer = asyncio.create_task(fsync_loop())

        async def one(index: int, key: str, messages: list[dict]) -> None:
            async with semaphore:
                if stop.is_set():
                    ledger.abandoned += 1
                    return
                ledger.requests_sent += 1
                tries = 0
                while True:
                    tries += 1
                    ledger.attempts += 1
                    try:
                        result = await attempt(messages)
                    except _Attempt as fail:
                        ledger.count_error(fail.kind)
                        if not fail.retryable or tries > cfg.max_retries:
                            if fail.retryable:
                                why = f"{fail.detail} (gave up after {tries} attempts)"
                            else:
                                why = f"{fail.detail} (not retryable)"
                            ledger.failures += 1
                            err = TeacherError(f"{self._describe(index, key, messages)} failed: {why}",
                                               index=index, key=key, reason=why)
                            errors.append(err)
                            logger.error("%s", err)
                            if cfg.fail_fast:
                                stop.set()
                            progress.update(task, note=note())
                            return
                        if stop.is_set():
                            ledger.abandoned += 1
                            return
                        delay = random.uniform(0, min(cfg.backoff_max, cfg.backoff_base * 2 ** (tries - 1)))
                        if fail.retry_after is not None:  # the server knows best: never come back earlier
                            delay = max(delay, fail.retry_after + random.uniform(0, 0.1 * fail.retry_after))
                        ledger.retries += 1
                        logger.info("%s: %s; retry %d/%d in %.2fs", self._describe(index, key, messages),
                                    fail.detail, tries, cfg.max_retries, delay)
                        progress.update(task, note=note())
                        try:
                            await asyncio.wait_for(stop.wait(), timeout=delay)
                        except asyncio.TimeoutError:
                            continue
                        ledger.abandoned += 1  # another request failed for good meanwhile (fail_fast)
                        return
                    else:
                        self._cache.add([self._record(key, messages, temperature, max_tokens, result)], sync=False)
                        schedule_fsync()
                        ledger.completed += 1
                        ledger.prompt_tokens += result["prompt_tokens"]
                        ledger.completion_tokens += result["completion_tokens"]
                        progress.advance(task)
                        return

        try:
            with progress:
                await asyncio.gather(*(one(i, k, m) for i, k, m in jobs))
        finally:
            if syncer is not None:
                await asyncio.gather(syncer, return_exceptions=True)
            self._cache.fsync()
            await client.close()
        errors.sort(key=lambda e: e.index if e.index is not None else -1)
        return errors

    # ------------------------------------------------------------------ local backend
    def _run_local(self, jobs, desc, max_tokens, temperature) -> None:
        from citing_trl.generation import GenerationConfig, generate

        if self._model is None:
            from citing_trl.models import load_model

            logger.info("loading local teacher %s", self.config.model)
            self._model, self._tokenizer = load_model(self.config.model)
        gen_config = GenerationConfig(
            max_new_tokens=max_tokens, batch_size=self.config.local_batch_size, do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else 1.0, repetition_penalty=self.config.repetition_penalty,
            no_repeat_ngram_size=self.config.no_repeat_ngram_size,
        )
        done: set[int] = set()

        def on_batch(indices: list[int], generations) -> None:
            records = []
            for pos, gen in zip(indices, generations):
                _, key, messages = jobs[pos]
                result = {"text": gen.text, "finish_reason": gen.finish_reason, "prompt_tokens": gen.prompt_tokens,
                          "completion_tokens": gen.completion_tokens}
                records.append(self._record(key, messages, temperature, max_tokens, result))
                self.ledger.completed += 1
                self.ledger.prompt_tokens += gen.prompt_tokens
                self.ledger.completion_tokens += gen.completion_tokens
                done.add(pos)
            self._cache.add(records)

        self.ledger.requests_sent += len(jobs)
        self.ledger.attempts += len(jobs)
        try:
            generate(self._model, self._tokenizer, [m for _, _, m in jobs], gen_config, desc=desc, on_batch=on_batch)
        except Exception as err:
            unfinished = [j for pos, j in enumerate(jobs) if pos not in done]
            self.ledger.failures += len(unfinished)
            self.ledger.count_error("local")
            index, key, messages = unfinished[0] if unfinished else jobs[0]
            reason = f"local generation with {self.config.model!r} failed: {type(err).__name__}: {err}"
            raise TeacherError(
                f"{self._describe(index, key, messages)} and {max(len(unfinished) - 1, 0)} other unfinished "
                f"request(s): {reason}", index=index, key=key, reason=reason,
            ) from err
