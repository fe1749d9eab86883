"""The ``openai`` backend in ``batch`` mode: the OpenAI Batch API, at half price, resumable."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from citing_trl.jsonl import iter_jsonl
from citing_trl.progress import progress_bar
from citing_trl.teacher.backends.base import BackendContext, Job, TeacherBackend
from citing_trl.teacher.backends.openai import OpenAIBackend
from citing_trl.teacher.cache import canonical_json
from citing_trl.teacher.errors import TeacherError
from citing_trl.teacher.responses import MalformedResponse, parse_choices
from citing_trl.teacher.secrets import client_api_key, redactor

logger = logging.getLogger(__name__)


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

    name = "openai"
    mode = "batch"
    summary = "the Batch API of an OpenAI-compatible server"
    TERMINAL = ("completed", "failed", "expired", "cancelled")

    def __init__(self, context: BackendContext):
        super().__init__(context)
        cache = context.cache_path
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

            self._client = openai.OpenAI(api_key=client_api_key(self.config.api_key_env),
                                         base_url=self.config.base_url, max_retries=self.config.max_retries,
                                         timeout=self.config.timeout)
        return self._client

    def _api(self, step: str, entry: dict | None, call):
        import openai

        try:
            return call()
        except openai.OpenAIError as err:
            detail = redactor(self.config.api_key_env)(" ".join(str(err).split())[:300])
            where = f" (batch {entry.get('batch_id') or entry['submission']})" if entry else ""
            state = f"; the batch state is in {self.state_path}, a rerun resumes from it" if self.state_path else ""
            raise TeacherError(f"batch teacher: {step}{where} failed: {type(err).__name__}: {detail}{state}",
                               reason=detail) from None

    # ---------------------------------------------------------------- run
    def run(self, jobs: list[Job], desc: str) -> None:
        units = {key: job for job in jobs for key in job.keys}
        cached = self.context.cache.get
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
            live_jobs = [Job(job.index, job.messages, [k for k in job.keys if cached(k) is None],
                              [s for k, s in zip(job.keys, job.samples) if cached(k) is None], job.temperature,
                              job.max_tokens) for job in jobs if any(cached(k) is None for k in job.keys)]
            self.ledger.batch_retried_live += sum(len(j.keys) for j in live_jobs)
            self.ledger.requests_sent -= sum(len(j.keys) for j in live_jobs)  # the live backend counts them again
            logger.warning("%s: %d batch line(s) failed or expired; sending them as live requests (full price)", desc,
                           len(missing))
            OpenAIBackend(self.context).run(live_jobs, f"{desc} (live retry)")
            return
        key = missing[0]
        job = units[key]
        why = f"no answer after {rounds} batch round(s) (failed or expired lines)"
        self.ledger.failures += len(missing)
        self.context.fail(jobs, [TeacherError(
            f"{self.context.describe(job, key)} failed: {why}",
            index=job.index, key=key, reason=why)])

    def _submit(self, keys: list[str], units: dict[str, Job], desc: str) -> dict:
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

    def _finish(self, entry: dict, units: dict[str, Job], desc: str) -> None:
        if entry["batch_id"] is None and not self._adopt(entry):
            self._create(entry)
        batch = self._poll(entry, desc)
        self._collect(entry, batch, units)

    def _poll(self, entry: dict, desc: str):
        client = self.client()
        progress = progress_bar(field="status")
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

    def _collect(self, entry: dict, batch, units: dict[str, Job]) -> None:
        redact = redactor(self.config.api_key_env)
        foreign = None  # lines of this batch that the current call did not ask for (an earlier call's)
        answered: set[str] = set()
        for row in self._download(entry, batch.output_file_id):
            key = row.get("custom_id")
            response = row.get("response") or {}
            if key not in entry["keys"] or response.get("status_code") != 200:
                continue
            try:
                result = parse_choices(json.dumps(response.get("body")), redact)[0]
            except MalformedResponse as err:
                logger.warning("batch %s line %s: %s; it counts as failed", entry["batch_id"], key[:12], err)
                continue
            result["text"] = redact(result["text"])
            job = units.get(key)
            if job is None:
                foreign = foreign if foreign is not None else self._input_jobs(entry)
                job = foreign.get(key)
                if job is None:
                    continue
            if self.context.cache.get(key) is None:
                self.context.store(job, key, result, sync=False, batch=True)
            answered.add(key)
        errors = {row.get("custom_id"): row for row in self._download(entry, batch.error_file_id)}
        self.context.cache.fsync()
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

    def _input_jobs(self, entry: dict) -> dict[str, Job]:
        path = self._lines_path(entry)
        text = path.read_text() if path is not None and path.exists() else entry.get("lines", "")
        origin = str(path) if path is not None else f"the lines of batch submission {entry['submission']}"
        out = {}
        for _, row in iter_jsonl(text, origin, TeacherError):  # written whole by _submit: a bad line is an error
            body = row["body"]
            out[row["custom_id"]] = Job(-1, body["messages"], [row["custom_id"]], [0], body["temperature"],
                                         body["max_tokens"])
        return out
