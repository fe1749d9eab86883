"""The ``openai`` backend: live requests to an OpenAI-compatible chat-completions server.

The ``openai`` SDK (about a second to import) is imported when the backend first runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable

from citing_trl.progress import progress_bar
from citing_trl.teacher.backends.base import BackendContext, Job, TeacherBackend
from citing_trl.teacher.errors import TeacherError
from citing_trl.teacher.responses import (
    AttemptFailed,
    MalformedResponse,
    backoff_delay,
    is_retryable_status,
    parse_choices,
    retry_after_of,
)
from citing_trl.teacher.secrets import client_api_key, redactor

logger = logging.getLogger(__name__)


class OpenAIBackend(TeacherBackend):
    """Live requests to an OpenAI-compatible chat completions server with bounded concurrency, retries with
    jittered exponential backoff (``Retry-After`` honoured) and ``n`` for several samples of one request."""

    name = "openai"
    summary = "any OpenAI-compatible chat completions server"

    def __init__(self, context: BackendContext):
        super().__init__(context)
        self.n_supported: bool | None = None  # None until a call with n > 1 shows whether the server honours it

    def run(self, jobs: list[Job], desc: str) -> None:
        redact = redactor(self.config.api_key_env)  # a server may echo the key back in an error body

        def run() -> list[TeacherError]:
            return asyncio.run(self._run_async(jobs, desc, redact))

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            errors = run()
        else:  # called from inside an event loop (e.g. a notebook): run ours in a worker thread
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                errors = pool.submit(run).result()
        if errors:
            self.context.fail(jobs, errors, redact)

    def client(self):
        import openai

        return openai.AsyncOpenAI(api_key=client_api_key(self.config.api_key_env), base_url=self.config.base_url,
                                  max_retries=0, timeout=self.config.timeout)

    async def _run_async(self, jobs: list[Job], desc: str, redact: Callable[[str], str]) -> list[TeacherError]:
        import openai

        cfg = self.config
        context = self.context
        client = self.client()
        semaphore = asyncio.Semaphore(cfg.max_concurrency)
        stop = asyncio.Event()
        errors: list[TeacherError] = []
        ledger = self.ledger
        progress = progress_bar(field="note")
        task = progress.add_task(desc, total=sum(len(job.keys) for job in jobs), note="")

        def note() -> str:
            parts = []
            if ledger.retries:
                parts.append(f"retries {ledger.retries}")
            if errors:
                parts.append(f"failed {len(errors)}")
            return ", ".join(parts)

        async def attempt(job: Job, n: int) -> list[dict]:
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
                results = parse_choices(raw.http_response.text, redact)
                for result in results:
                    result["text"] = redact(result["text"])
                return results
            except (asyncio.TimeoutError, openai.APITimeoutError):
                raise AttemptFailed("timeout", f"no answer within {cfg.timeout:g}s", True) from None
            except openai.APIStatusError as err:
                status = err.status_code
                retry_after = retry_after_of(err.response.headers if err.response is not None else None)
                detail = f"HTTP {status}: {redact(' '.join(str(err.message).split()))[:300]}"
                raise AttemptFailed(str(status), detail, is_retryable_status(status), retry_after) from None
            except openai.APIConnectionError as err:
                cause = err.__cause__ or err
                detail = redact(f"connection error: {type(cause).__name__}: {cause}")[:300]
                raise AttemptFailed("connection", detail, True) from None
            except MalformedResponse as err:
                raise AttemptFailed("malformed", str(err), True) from None

        # Records are written and flushed at once (a killed process loses nothing); fsync, which can take
        # milliseconds, runs in a worker thread, one call covering every record written before it started.
        syncer: asyncio.Task | None = None

        async def fsync_loop() -> None:
            while context.cache.dirty:
                await asyncio.to_thread(context.cache.fsync)

        def schedule_fsync() -> None:
            nonlocal syncer
            if syncer is None or syncer.done():
                syncer = asyncio.create_task(fsync_loop())

        async def one(job: Job) -> None:
            async with semaphore:
                if stop.is_set():
                    ledger.abandoned += len(job.keys)
                    return
                ledger.requests_sent += len(job.keys)
                todo = list(zip(job.keys, job.samples))
                tries = 0
                while todo:
                    n = len(todo) if len(todo) > 1 and self.n_supported is not False else 1
                    key = todo[0][0]
                    tries += 1
                    ledger.attempts += 1
                    try:
                        results = await attempt(job, n)
                    except AttemptFailed as fail:
                        if n > 1 and not fail.retryable:
                            # the server refuses `n`: ask for the samples one at a time from now on
                            self.n_supported = False
                            ledger.count_error("n_refused")
                            logger.info("the teacher server refused n=%d (%s); sending one request per sample", n,
                                        fail.detail)
                            tries -= 1
                            continue
                        ledger.count_error(fail.kind)
                        described = context.describe(job, key)
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
                        delay = backoff_delay(tries, cfg.backoff_base, cfg.backoff_max, fail.retry_after)
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
                        context.store(job, k, result, sync=False, bill_prompt=pos == 0)
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
            context.cache.fsync()
            await client.close()
        errors.sort(key=lambda e: e.index if e.index is not None else -1)
        return errors
