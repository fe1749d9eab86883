"""The teacher client: real server round trip, retries against scripted faults, crash safety of the cache,
API-key hygiene and the local backend."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import start_client  # noqa: E402

from citing_trl.teacher import Teacher, TeacherConfig, TeacherError, UsageLedger, parse_retry_after
from tests.helpers.fault_server import Fault, FaultServer, request_key


def msgs(text: str, system: str | None = None) -> list[dict]:
    out = [{"role": "system", "content": system}] if system else []
    return out + [{"role": "user", "content": text}]


def openai_config(server: FaultServer, **kw) -> TeacherConfig:
    base = dict(backend="openai", model="fault-model", base_url=server.base_url, api_key_env="CITING_TEST_NO_SUCH_KEY",
                backoff_base=0.01, backoff_max=0.05, timeout=5.0, max_concurrency=8)
    base.update(kw)
    return TeacherConfig(**base)


def cache_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def server():
    with FaultServer() as srv:
        yield srv


# ------------------------------------------------------------------------------------------------
# 1. a real OpenAI-compatible server
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_transformers_serve_roundtrip_and_cache(serve_smollm2, tmp_path):
    cache = tmp_path / "teacher.jsonl"
    config = TeacherConfig(backend="openai", model=serve_smollm2.model, base_url=serve_smollm2.base_url,
                           max_tokens=8, max_concurrency=3, timeout=120)
    requests = [msgs("Name a colour."), msgs("What is 2 + 2?"), msgs("Say hello in French.")]
    with Teacher(config, cache_path=cache) as teacher:
        texts = teacher.complete(requests, desc="smollm2")
    assert len(texts) == 3 and all(t.strip() for t in texts)
    ledger = teacher.ledger
    assert ledger.requests_sent == 3 and ledger.completed == 3 and ledger.failures == 0
    assert ledger.prompt_tokens > 0 and ledger.completion_tokens > 0
    assert len(cache_lines(cache)) == 3

    with Teacher(config, cache_path=cache) as again:
        assert again.complete(requests) == texts
    assert again.ledger.cache_hits == 3 and again.ledger.requests_sent == 0 and again.ledger.attempts == 0


# ------------------------------------------------------------------------------------------------
# 2. scripted faults
# ------------------------------------------------------------------------------------------------


def test_every_fault_is_retried_and_each_request_answered_once(server, tmp_path):
    server.script("q1", [Fault.error(500), Fault.error(503)])
    server.script("q2", [Fault.malformed()])
    server.script("q3", [Fault.no_choices(), Fault.null_content()])
    server.script("q4", [Fault.stall(10)])
    server.script("q5", [Fault.drop()])
    server.script("q6", [Fault.rate_limit()])  # 429 without Retry-After: jittered backoff
    requests = [msgs(f"q{i}") for i in range(10)] + [msgs("q1"), msgs("q2")]  # two in-batch duplicates
    teacher = Teacher(openai_config(server, timeout=0.5), cache_path=tmp_path / "c.jsonl")
    texts = teacher.complete(requests)

    assert texts == [f"Answer to: q{i}" for i in range(10)] + ["Answer to: q1", "Answer to: q2"]
    distinct = {request_key(r) for r in requests}
    assert set(server.successes) == distinct
    assert all(server.successes[k] == 1 for k in distinct)
    assert server.arrivals[request_key(msgs("q1"))] == 3
    assert server.outcomes(request_key(msgs("q3"))) == ["no_choices", "null_content", "ok"]
    led = teacher.ledger
    assert (led.requests, led.deduplicated, led.requests_sent, led.completed) == (12, 2, 10, 10)
    assert led.retries == 8 and led.attempts == 18 == server.total_hits
    assert led.errors == {"500": 1, "503": 1, "malformed": 3, "timeout": 1, "connection": 1, "429": 1}
    assert len(cache_lines(tmp_path / "c.jsonl")) == 10


def test_retry_after_is_honoured(server):
    server.script("slow down", [Fault.rate_limit(retry_after=1)])
    server.script("date form", [Fault.rate_limit(retry_after=time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                                                            time.gmtime(time.time() + 2)))])
    teacher = Teacher(openai_config(server, backoff_base=0.001, backoff_max=0.002))
    assert teacher.complete([msgs("slow down"), msgs("date form")]) == ["Answer to: slow down", "Answer to: date form"]
    first, second = server.arrival_times(request_key(msgs("slow down")))
    assert second - first >= 1.0  # without the header the retry would come after a few milliseconds
    first, second = server.arrival_times(request_key(msgs("date form")))
    assert second - first >= 0.9  # an HTTP date has one-second resolution


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 10) == pytest.approx(10.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 + 10) == 0.0


def test_bad_request_fails_fast_and_names_the_request(server, tmp_path):
    server.latency = 0.05
    server.script("broken prompt", [Fault.error(400)])
    requests = [msgs("fine 0"), msgs("fine 1"), msgs("a broken prompt that the server rejects"), msgs("fine 3")]
    teacher = Teacher(openai_config(server, max_retries=5), cache_path=tmp_path / "c.jsonl")
    with pytest.raises(TeacherError) as info:
        teacher.complete(requests)
    err = info.value
    assert err.index == 2 and "#2" in str(err) and "a broken prompt" in str(err) and "400" in str(err)
    assert err.key[:12] in str(err)
    assert server.arrivals[request_key(requests[2])] == 1  # not retried
    assert teacher.ledger.failures == 1 and teacher.ledger.retries == 0
    # the others were in flight together with it: their answers are kept
    assert {r["messages"][0]["content"] for r in cache_lines(tmp_path / "c.jsonl")} == {"fine 0", "fine 1", "fine 3"}


def test_retries_exhausted_names_the_request_and_keeps_the_rest(server, tmp_path):
    server.latency = 0.05
    server.script("always failing", [Fault.error(502)] * 3)  # max_retries=2 -> 3 attempts, all fail
    requests = [msgs(f"ok {i}") for i in range(5)] + [msgs("always failing question")]
    cache = tmp_path / "c.jsonl"
    teacher = Teacher(openai_config(server, max_retries=2), cache_path=cache)
    with pytest.raises(TeacherError) as info:
        teacher.complete(requests)
    assert info.value.index == 5 and "always failing question" in str(info.value) and "502" in str(info.value)
    assert "3 attempts" in str(info.value)
    assert server.arrivals[request_key(requests[5])] == 3
    assert len(cache_lines(cache)) == 5

    # a rerun on the same cache sends only the failed request (the server now answers it)
    again = Teacher(openai_config(server, max_retries=2), cache_path=cache)
    assert again.complete(requests)[-1] == "Answer to: always failing question"
    assert again.ledger.cache_hits == 5 and again.ledger.requests_sent == 1
    assert all(server.successes[request_key(r)] == 1 for r in requests)


def test_keep_going_reports_every_failure(server):
    server.script("bad one", [Fault.error(422)])
    server.script("bad two", [Fault.error(404)])
    teacher = Teacher(openai_config(server, fail_fast=False, max_concurrency=1))
    with pytest.raises(TeacherError) as info:
        teacher.complete([msgs("bad one"), msgs("good"), msgs("bad two"), msgs("good too")])
    assert info.value.index == 0 and "1 other request(s) failed" in str(info.value)
    assert teacher.ledger.completed == 2 and teacher.ledger.failures == 2 and teacher.ledger.abandoned == 0


def test_missing_key_sends_dummy_and_duplicates_are_sent_once(server, monkeypatch):
    monkeypatch.delenv("CITING_TEST_NO_SUCH_KEY", raising=False)
    teacher = Teacher(openai_config(server))
    out = teacher.complete([msgs("same"), msgs("same"), msgs("other"), msgs("same")])
    assert out == ["Answer to: same", "Answer to: same", "Answer to: other", "Answer to: same"]
    assert server.arrivals[request_key(msgs("same"))] == 1
    assert {h.authorization for h in server.hits} == {"Bearer EMPTY"}
    # the in-memory cache (no cache_path) also serves repeats
    teacher.complete([msgs("other")])
    assert teacher.ledger.cache_hits == 1 and server.total_hits == 2


def test_sampling_settings_are_part_of_the_cache_key(server, tmp_path):
    teacher = Teacher(openai_config(server), cache_path=tmp_path / "c.jsonl")
    teacher.complete([msgs("x")])
    teacher.complete([msgs("x")], max_tokens=7)
    teacher.complete([msgs("x")], temperature=0.7)
    teacher.complete([msgs("x")], temperature=0.7)
    assert server.total_hits == 3 and teacher.ledger.cache_hits == 1


def test_works_inside_a_running_event_loop(server):
    teacher = Teacher(openai_config(server))

    async def caller():
        return teacher.complete([msgs("from a coroutine")])

    assert asyncio.run(caller()) == ["Answer to: from a coroutine"]


def test_bad_input_names_the_request(server):
    teacher = Teacher(openai_config(server))
    with pytest.raises(ValueError, match=r"#1"):
        teacher.complete([msgs("ok"), "just a string"])
    with pytest.raises(ValueError, match=r"#0, message 0"):
        teacher.complete([[{"role": "user"}]])
    with pytest.raises(ValueError, match="backend"):
        TeacherConfig(backend="vllm")
    assert server.total_hits == 0


def test_ledger_summary_save_and_print(server, tmp_path):
    teacher = Teacher(openai_config(server, price_prompt_per_1m=2.0, price_completion_per_1m=8.0))
    teacher.complete([msgs("one two three"), msgs("four")])
    summary = teacher.ledger.summary()
    expected = (summary["prompt_tokens"] * 2.0 + summary["completion_tokens"] * 8.0) / 1e6
    assert summary["prompt_tokens"] > 0 and summary["estimated_cost"] == pytest.approx(expected, abs=1e-6)
    saved = json.loads(teacher.ledger.save(tmp_path / "ledger.json").read_text())
    assert saved["completed"] == 2
    from rich.console import Console

    console = Console(record=True, width=100)
    teacher.ledger.print(console, title="usage")
    assert "completion tokens" in console.export_text()
    assert isinstance(teacher.ledger, UsageLedger)


# ------------------------------------------------------------------------------------------------
# 3. crash safety of the cache
# ------------------------------------------------------------------------------------------------

CLIENT = """
import json, sys
from citing_trl.teacher import Teacher, TeacherConfig
base_url, cache, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = TeacherConfig(backend="openai", model="fault-model", base_url=base_url, max_concurrency=4, timeout=60,
                       api_key_env="CITING_TEST_NO_SUCH_KEY")
requests = [[{"role": "user", "content": f"kill test question {i}"}] for i in range(n)]
texts = Teacher(config, cache_path=cache).complete(requests)
print(json.dumps(texts))
"""


def run_client(tmp_path: Path, server: FaultServer, cache: Path, n: int) -> subprocess.Popen:
    return start_client(tmp_path, CLIENT, server.base_url, cache, n)


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def wait_for(condition, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"client exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def server_keys_in_cache(cache: Path) -> set[str]:
    from citing_trl.teacher import TeacherCache

    return {request_key(rec["messages"]) for rec in TeacherCache(cache).records.values()}


def all_keys(n: int) -> set[str]:
    return {request_key(msgs(f"kill test question {i}")) for i in range(n)}


def rerun_and_check(tmp_path, server, cache, n, cached_at_kill: set[str]) -> list:
    before = server.total_hits
    proc = run_client(tmp_path, server, cache, n)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1]) == [f"Answer to: kill test question {i}" for i in range(n)]
    rerun_hits = [h.key for h in server.hits[before:]]
    assert sorted(rerun_hits) == sorted(all_keys(n) - cached_at_kill)  # only the unfinished, each once
    return rerun_hits


@pytest.mark.slow
def test_kill_9_in_the_middle_then_rerun_sends_only_unfinished(server, tmp_path):
    n, answered = 40, 13
    server.hold_after(answered)  # answer 13, then keep the next requests in flight until released
    cache = tmp_path / "kill.jsonl"
    proc = run_client(tmp_path, server, cache, n)
    wait_for(lambda: count_lines(cache) == answered and server.held == 4, proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    server.release()
    assert proc.returncode == -signal.SIGKILL
    cached = server_keys_in_cache(cache)
    assert len(cached) == answered and sum(server.successes.values()) == answered

    server.hold_after(None)
    rerun_hits = rerun_and_check(tmp_path, server, cache, n, cached)
    assert len(rerun_hits) == n - answered
    assert set(server.successes) == all_keys(n)
    assert all(count == 1 for count in server.successes.values())  # nothing answered twice
    assert len(cache_lines(cache)) == n


@pytest.mark.slow
def test_kill_9_at_an_arbitrary_moment(server, tmp_path):
    """No gate: the kill lands wherever it lands. An answer that reached the cache is never requested again;
    only an answer lost in the instant between the server's reply and the cache write may be asked twice."""
    server.latency = 0.1
    n = 40
    cache = tmp_path / "kill.jsonl"
    proc = run_client(tmp_path, server, cache, n)
    wait_for(lambda: count_lines(cache) >= 10, proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    cached = server_keys_in_cache(cache)
    assert 10 <= len(cached) < n
    server.latency = 0.0
    rerun_and_check(tmp_path, server, cache, n, cached)
    assert all(server.successes[k] == 1 for k in cached)
    assert all(1 <= server.successes[k] <= 2 for k in all_keys(n))


def test_truncated_last_line_is_ignored_with_a_warning(server, tmp_path, caplog):
    cache = tmp_path / "c.jsonl"
    requests = [msgs(f"t{i}") for i in range(4)]
    Teacher(openai_config(server), cache_path=cache).complete(requests[:3])
    whole = cache.read_bytes()
    with open(cache, "ab") as fh:  # what a kill in the middle of a write leaves behind
        fh.write(b'{"key": "abc", "text": "half a rec')
    with caplog.at_level(logging.WARNING, logger="citing_trl.teacher"):
        teacher = Teacher(openai_config(server), cache_path=cache)
    assert "truncated last line" in caplog.text
    assert cache.read_bytes() == whole  # the torn tail is cut off so later appends start on a clean line
    before = server.total_hits
    assert teacher.complete(requests) == [f"Answer to: t{i}" for i in range(4)]
    assert server.total_hits == before + 1 and teacher.ledger.cache_hits == 3
    assert len(cache_lines(cache)) == 4  # every line parses


def test_unreadable_middle_line_is_skipped(server, tmp_path, caplog):
    cache = tmp_path / "c.jsonl"
    Teacher(openai_config(server), cache_path=cache).complete([msgs("a")])
    cache.write_text("not json at all\n" + cache.read_text())
    with caplog.at_level(logging.WARNING, logger="citing_trl.teacher"):
        teacher = Teacher(openai_config(server), cache_path=cache)
    assert "line 1" in caplog.text
    teacher.complete([msgs("a")])
    assert teacher.ledger.cache_hits == 1 and server.total_hits == 1


# ------------------------------------------------------------------------------------------------
# 4. API-key hygiene
# ------------------------------------------------------------------------------------------------


def test_api_key_never_leaves_the_environment(server, tmp_path, monkeypatch, caplog, capsys):
    secret = "sk-citing-test-Zq8Xv3Lm0Pk7Wn2Rt5Yb9"
    monkeypatch.setenv("CITING_TEST_KEY", secret)
    server.script("echo me", [Fault.error(400, echo_auth=True)])
    server.script("flaky", [Fault.error(500, echo_auth=True), Fault.malformed()])
    cache = tmp_path / "c.jsonl"
    config = openai_config(server, api_key_env="CITING_TEST_KEY", fail_fast=False)
    caplog.set_level(logging.DEBUG)  # every logger, the SDK's and the HTTP client's included
    for name in ("openai", "httpx", "httpx2", "httpcore", "httpcore2"):
        caplog.set_level(logging.DEBUG, logger=name)
    teacher = Teacher(config, cache_path=cache)
    with pytest.raises(TeacherError) as info:
        teacher.complete([msgs("flaky"), msgs("fine"), msgs("echo me")])
    teacher.ledger.print()
    ledger_path = teacher.ledger.save(tmp_path / "ledger.json")
    teacher.close()

    assert {h.authorization for h in server.hits} == {f"Bearer {secret}"}  # the key was really used...
    assert "you sent Authorization" in str(info.value)  # ...and the server did echo it back
    captured = capsys.readouterr()
    for where, text in {
        "error": str(info.value) + repr(info.value) + info.value.reason,
        "cache": cache.read_text(), "ledger": ledger_path.read_text(), "logs": caplog.text,
        "stdout": captured.out, "stderr": captured.err, "config": repr(config),
    }.items():
        assert secret not in text, f"the API key leaked into the {where}"
    assert len(cache_lines(cache)) == 2


# ------------------------------------------------------------------------------------------------
# local backend
# ------------------------------------------------------------------------------------------------


def test_local_backend_generates_caches_and_counts_tokens(tiny_model_dir, tmp_path):
    cache = tmp_path / "local.jsonl"
    config = TeacherConfig(backend="local", model=str(tiny_model_dir), max_tokens=6, local_batch_size=2)
    requests = [msgs("Explain item 1."), msgs("Describe a fox."), msgs("Explain item 1."), msgs("Why?", "Be brief.")]
    teacher = Teacher(config, cache_path=cache)
    texts = teacher.complete(requests, desc="local teacher")
    assert len(texts) == 4 and texts[0] == texts[2]
    led = teacher.ledger
    assert led.requests_sent == 3 and led.deduplicated == 1 and led.completed == 3
    assert led.prompt_tokens > 0 and 0 < led.completion_tokens <= 3 * 6
    assert len(cache_lines(cache)) == 3

    again = Teacher(config, cache_path=cache)
    assert again.complete(requests) == texts
    assert again._model is None  # everything came from the cache: the model was never loaded
    assert again.ledger.cache_hits == 4 and again.ledger.requests_sent == 0


def test_release_model_frees_a_loaded_teacher_and_reloads_it(tiny_model_dir, tmp_path):
    """The pipeline releases the local teacher's weights after each revision stage (they are not held while the
    student trains); the next request loads them again, with the same answers and one ledger."""
    config = TeacherConfig(backend="local", model=str(tiny_model_dir), max_tokens=6)
    teacher = Teacher(config, cache_path=tmp_path / "c.jsonl")
    first = teacher.complete([msgs("Explain item 1.")])
    assert teacher._model is not None
    teacher.release_model()
    assert teacher._model is None
    fresh = Teacher(config)  # no cache: the answer below is generated by a freshly loaded model
    assert teacher.complete([msgs("Describe a fox.")]) == fresh.complete([msgs("Describe a fox.")])
    assert teacher._model is not None and teacher.ledger.requests_sent == 2
    assert teacher.complete([msgs("Explain item 1.")]) == first and teacher.ledger.cache_hits == 1


def test_local_backend_accepts_a_preloaded_model(tiny_model_dir):
    from citing_trl.models import load_model

    model, tokenizer = load_model(str(tiny_model_dir))
    config = TeacherConfig(backend="local", model="tiny-preloaded", max_tokens=4)
    teacher = Teacher(config, model=model, tokenizer=tokenizer)
    assert len(teacher.complete([msgs("hello")])) == 1
    assert teacher.ledger.completed == 1
    teacher.release_model()  # the caller's model stays with the teacher
    assert teacher._model is model
    with pytest.raises(ValueError, match="both"):
        Teacher(config, model=model)
