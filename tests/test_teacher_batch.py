"""The Batch API teacher against a loopback fake of OpenAI's files and batches endpoints: upload, create,
poll, collect; failed and expired lines; a kill between submit and collect; never a second submission."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import start_client  # noqa: E402

from citing_trl.teacher import Teacher, TeacherConfig, TeacherError, cache_key
from tests.helpers.batch_server import BatchServer


def msgs(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def batch_config(server: BatchServer, **kw) -> TeacherConfig:
    base = dict(backend="openai", mode="batch", model="batch-model", base_url=server.base_url,
                api_key_env="CITING_TEST_NO_SUCH_KEY", batch_poll_interval=0.01, max_retries=1, timeout=5.0,
                backoff_base=0.01, backoff_max=0.02, max_tokens=64)
    base.update(kw)
    return TeacherConfig(**base)


def state(cache: Path) -> list[dict]:
    return json.loads((cache.parent / f"{cache.stem}.batches.json").read_text())["batches"]


def test_batch_roundtrip_cost_estimate_and_rerun(tmp_path, capsys):
    cache = tmp_path / "teacher.jsonl"
    requests = [msgs(f"question {i}") for i in range(5)] + [msgs("question 1")]
    with BatchServer(polls_to_finish=3) as server:
        config = batch_config(server, price_prompt_per_1m=2.0, price_completion_per_1m=8.0)
        teacher = Teacher(config, cache_path=cache)
        out = teacher.complete(requests, desc="revisions")
        assert out == [f"Answer to: question {i}" for i in range(5)] + ["Answer to: question 1"]
        assert server.uploads == 1 and len(server.batches) == 1 and server.live_calls == []
        (batch_id,) = server.batches
        batch = server.batches[batch_id]
        assert batch.endpoint == "/v1/chat/completions" and batch.completion_window == "24h"
        lines = server.lines_of(batch_id)
        assert [line["custom_id"] for line in lines] == [cache_key("batch-model", msgs(f"question {i}"), 0.0, 64)
                                                         for i in range(5)]
        assert {line["url"] for line in lines} == {"/v1/chat/completions"}
        assert server.retrieves == 3  # polled until it completed
        err = capsys.readouterr().err
        assert "batch of 5 request(s)" in err and "estimated cost at most" in err and "half" in err
        entries = state(cache)
        assert [(e["batch_id"], e["collected"], e["answered"]) for e in entries] == [(batch_id, True, 5)]
        led = teacher.ledger
        assert (led.batches_submitted, led.batch_lines, led.completed, led.deduplicated, led.requests_sent) == \
            (1, 5, 5, 1, 5)
        assert led.batch_prompt_tokens == led.prompt_tokens > 0
        full = (led.prompt_tokens * 2.0 + led.completion_tokens * 8.0) / 1e6
        assert led.estimated_cost == pytest.approx(full / 2)
        teacher.close()
        assert not list(tmp_path.glob("teacher.batches.*.jsonl"))  # the local copy of the lines is gone

        # the same answers are in the cache as live ones: a live teacher on the same cache sends nothing
        live = Teacher(batch_config(server, mode="live"), cache_path=cache)
        assert live.complete(requests) == out and live.ledger.requests_sent == 0
        again = Teacher(config, cache_path=cache)
        assert again.complete(requests) == out
        assert server.uploads == 1 and len(server.batches) == 1 and server.retrieves == 3


def test_failed_and_expired_lines_are_retried_live_and_counted(tmp_path):
    requests = [msgs(f"item {i}") for i in range(6)]
    with BatchServer(fail_lines=("item 1",), expire_after=4) as server:
        teacher = Teacher(batch_config(server), cache_path=tmp_path / "c.jsonl")
        assert teacher.complete(requests) == [f"Answer to: item {i}" for i in range(6)]
        assert sorted(server.live_calls) == ["item 1", "item 4", "item 5"]
        led = teacher.ledger
        assert (led.batch_failed_lines, led.batch_expired_lines, led.batch_retried_live) == (1, 2, 3)
        assert led.batches_submitted == 1 and led.completed == 6 and led.batch_prompt_tokens < led.prompt_tokens
        assert led.requests_sent == 6 and led.failures == 0


def test_failed_lines_go_into_a_new_batch_when_asked(tmp_path):
    requests = [msgs(f"row {i}") for i in range(4)]
    with BatchServer(fail_lines=("row 2",), expire_after=3, faulty_batches=1) as server:
        teacher = Teacher(batch_config(server, batch_retry="batch"), cache_path=tmp_path / "c.jsonl")
        assert teacher.complete(requests) == [f"Answer to: row {i}" for i in range(4)]
        assert server.live_calls == [] and len(server.batches) == 2
        second = list(server.batches)[1]
        assert sorted(line["body"]["messages"][0]["content"] for line in server.lines_of(second)) == ["row 2", "row 3"]
        assert teacher.ledger.batch_lines == 6 and teacher.ledger.batch_failed_lines == 1


def test_a_batch_that_keeps_failing_names_the_request(tmp_path):
    with BatchServer(reject_batches=True) as server:
        teacher = Teacher(batch_config(server, batch_retry="batch", batch_max_rounds=2), cache_path=tmp_path / "c.jsonl")
        with pytest.raises(TeacherError, match=r"request #0 .*'never answered'.*2 batch round"):
            teacher.complete([msgs("never answered")])
        assert len(server.batches) == 2 and server.live_calls == []


def test_crash_between_create_and_saving_the_id_adopts_the_batch(tmp_path, monkeypatch):
    import openai.resources.batches as batches_api

    cache = tmp_path / "c.jsonl"
    requests = [msgs("a"), msgs("b")]
    real_create = batches_api.Batches.create

    def create_then_die(self, **kw):
        real_create(self, **kw)
        raise KeyboardInterrupt  # the batch exists on the server, its id never reached the state file

    with BatchServer() as server:
        monkeypatch.setattr(batches_api.Batches, "create", create_then_die)
        with pytest.raises(KeyboardInterrupt):
            Teacher(batch_config(server), cache_path=cache).complete(requests)
        (entry,) = state(cache)
        assert entry["batch_id"] is None and entry["input_file_id"] and len(server.batches) == 1
        monkeypatch.setattr(batches_api.Batches, "create", real_create)
        teacher = Teacher(batch_config(server), cache_path=cache)
        assert teacher.complete(requests) == ["Answer to: a", "Answer to: b"]
        assert len(server.batches) == 1 and server.uploads == 1  # found by its submission id, not submitted again
        assert state(cache)[0]["batch_id"] == list(server.batches)[0]


def test_bad_mode_flags_are_refused():
    with pytest.raises(ValueError, match="mode 'batch' needs backend 'openai'"):
        TeacherConfig(backend="local", mode="batch")
    with pytest.raises(ValueError, match="mode must be"):
        TeacherConfig(mode="offline")
    with pytest.raises(ValueError, match="batch_retry"):
        TeacherConfig(backend="openai", mode="batch", batch_retry="never")


CLIENT = """
import json, sys
from citing_trl.teacher import Teacher, TeacherConfig
base_url, cache, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = TeacherConfig(backend="openai", mode="batch", model="batch-model", base_url=base_url, max_tokens=64,
                       batch_poll_interval=0.02, api_key_env="CITING_TEST_NO_SUCH_KEY")
requests = [[{"role": "user", "content": f"kill test {i}"}] for i in range(n)]
print(json.dumps(Teacher(config, cache_path=cache).complete(requests)))
"""


def run_client(tmp_path: Path, server: BatchServer, cache: Path, n: int) -> subprocess.Popen:
    return start_client(tmp_path, CLIENT, server.base_url, cache, n)


def test_kill_between_submit_and_collect_then_rerun_polls_the_same_batch(tmp_path):
    cache = tmp_path / "kill.jsonl"
    n = 8
    with BatchServer(manual=True) as server:
        proc = run_client(tmp_path, server, cache, n)
        deadline = time.monotonic() + 90
        while not (server.retrieves >= 2 and cache.with_name("kill.batches.json").exists()):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the client never polled its batch"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        (entry,) = state(cache)
        assert entry["batch_id"] in server.batches and not entry["collected"]
        assert not cache.exists() or cache.read_text() == ""  # nothing collected before the kill
        server.finish()

        rerun = run_client(tmp_path, server, cache, n)
        out, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err[-2000:]
        assert json.loads(out.strip().splitlines()[-1]) == [f"Answer to: kill test {i}" for i in range(n)]
        assert server.uploads == 1 and len(server.batches) == 1 and server.live_calls == []
        assert state(cache)[0]["collected"] is True


def test_citing_arguments_expose_teacher_mode():
    from citing_trl.citing_config import TeacherArguments

    assert TeacherArguments(teacher_backend="openai", teacher_mode="batch").build().mode == "batch"
    assert TeacherArguments().build().mode == "live"
    # the rule is TeacherConfig's own (one validator), worded there and renamed to the recipe's flag
    with pytest.raises(ValueError, match=r"--teacher_mode 'batch' needs backend 'openai'"):
        TeacherArguments(teacher_backend="local", teacher_mode="batch").build()
    with pytest.raises(ValueError, match=r"--teacher_mode must be one of live, batch"):
        TeacherArguments(teacher_mode="offline")
