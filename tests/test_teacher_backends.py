"""The backend registry is the one list of teacher backends, and backends talk to the Teacher only through the
public BackendContext (store, describe, fail)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from citing_trl.configs import prefixed
from citing_trl.errors import ConfigError, UserError
from citing_trl.teacher import Teacher, TeacherConfig, TeacherError, backends, cache_key
from citing_trl.teacher.backends import (
    BatchBackend,
    LocalBackend,
    OpenAIBackend,
    TeacherBackend,
    backend_class,
    backend_modes,
    backend_names,
    register_backend,
)

PACKAGE = Path(__file__).resolve().parents[1] / "citing_trl" / "teacher"


class ReverseBackend(TeacherBackend):
    """Answers with the last message reversed; refuses prompts that contain 'refuse'."""

    name = "dummy"
    summary = "answers with the prompt reversed"

    @classmethod
    def decoding_key(cls, config):
        return {"style": "reversed"}

    def run(self, jobs, desc):
        errors = []
        self.ledger.requests_sent += sum(len(job.keys) for job in jobs)
        for job in jobs:
            for key in job.keys:
                text = job.messages[-1]["content"]
                if "refuse" in text:
                    self.ledger.failures += 1
                    errors.append(TeacherError(f"{self.context.describe(job, key)} failed: refused", index=job.index,
                                               key=key, reason="refused"))
                    continue
                self.context.store(job, key, {"text": text[::-1], "finish_reason": "stop", "prompt_tokens": 2,
                                              "completion_tokens": 3})
        if errors:
            self.context.fail(jobs, errors)


@pytest.fixture
def dummy(monkeypatch):
    """ReverseBackend registered as backend 'dummy' for one test (the registry is restored afterwards)."""
    monkeypatch.setattr(backends, "BACKENDS", dict(backends.BACKENDS))
    assert register_backend(ReverseBackend) is ReverseBackend
    return ReverseBackend


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_the_builtin_backends_are_registered_once():
    assert backend_names() == ("local", "openai") and backend_modes() == ("live", "batch")
    assert backend_class("local") is LocalBackend and backend_class("openai") is OpenAIBackend
    assert backend_class("openai", "batch") is BatchBackend
    assert sorted(backends.BACKENDS) == [("local", "live"), ("openai", "batch"), ("openai", "live")]


def test_an_unknown_backend_is_a_config_error_naming_the_flag():
    with pytest.raises(ConfigError, match=r"^--backend must be one of local, openai, got 'dummy'$") as info:
        TeacherConfig(backend="dummy")
    assert info.value.flag == "backend"
    with pytest.raises(ConfigError, match=r"^--teacher_backend must be one of local, openai, got 'nope'$"):
        prefixed(TeacherConfig, "teacher_")(teacher_backend="nope")
    with pytest.raises(ConfigError, match=r"--mode 'batch' needs backend 'openai' \(the Batch API of an "
                                          r"OpenAI-compatible server\), got 'batch'"):
        TeacherConfig(backend="local", mode="batch")


def test_a_registered_backend_is_valid_and_used(dummy, tmp_path):
    config = TeacherConfig(backend="dummy", model="rev")
    assert prefixed(TeacherConfig, "judge_")(judge_backend="dummy").build().backend == "dummy"
    with pytest.raises(ConfigError, match=r"--mode 'batch' needs backend 'openai'"):
        TeacherConfig(backend="dummy", mode="batch")
    cache = tmp_path / "c.jsonl"
    with Teacher(config, cache_path=cache) as teacher:
        assert isinstance(teacher.backend, ReverseBackend)
        assert teacher.complete([user("abc"), user("xyz"), user("abc")]) == ["cba", "zyx", "cba"]
        assert teacher.decoding_key() == {"style": "reversed"}
    led = teacher.ledger
    assert (led.requests_sent, led.completed, led.deduplicated, led.prompt_tokens, led.completion_tokens) == (
        2, 2, 1, 4, 6)
    # the backend's decoding settings are part of the key; a rerun answers from the cache
    assert cache_key("rev", user("abc"), 0.0, 512, style="reversed") in cache.read_text()
    with Teacher(config, cache_path=cache) as again:
        assert again.complete([user("xyz")]) == ["zyx"]
    assert again.ledger.cache_hits == 1 and again.ledger.requests_sent == 0


def test_a_backend_reports_failures_through_the_context(dummy, tmp_path):
    cache = tmp_path / "c.jsonl"
    teacher = Teacher(TeacherConfig(backend="dummy", model="rev"), cache_path=cache)
    with pytest.raises(TeacherError) as info:
        teacher.complete([user("fine"), user("please refuse this"), user("refuse that too")])
    err = info.value
    assert err.index == 1 and err.reason == "refused" and isinstance(err, UserError)
    assert re.match(r"teacher request #1 \(key [0-9a-f]{12}, prompt 'please refuse this'\) failed: refused; "
                    r"1 other request\(s\) failed too; finished answers are cached in ", str(err))
    assert teacher.ledger.completed == 1 and teacher.complete([user("fine")]) == ["enif"]


def test_register_backend_refuses_what_is_not_a_backend(monkeypatch):
    monkeypatch.setattr(backends, "BACKENDS", dict(backends.BACKENDS))
    with pytest.raises(TypeError, match="not a TeacherBackend"):
        register_backend(object)

    class Nameless(TeacherBackend):
        pass

    with pytest.raises(TypeError, match="no `name`"):
        register_backend(Nameless)


def test_backends_use_only_the_public_context_and_choices_are_listed_once():
    sources = {p.relative_to(PACKAGE).as_posix(): p.read_text() for p in PACKAGE.rglob("*.py")}
    for name, text in sources.items():
        if name.startswith("backends/"):
            assert not re.search(r"\bteacher\._|\._(store|fail|describe|cache|preloaded)\b", text), name
    # the backend names appear as choices nowhere but in the backend classes themselves
    listed = [name for name, text in sources.items() if re.search(r"""\(\s*["']local["']\s*,\s*["']openai["']""", text)]
    assert listed == []


def test_a_resumed_batch_caches_the_lines_of_the_earlier_call_too(tmp_path, monkeypatch):
    """A batch submitted for requests [a, b] and resumed by a call that asks only for [a]: b's answer is read
    back from the batch's lines file and cached too, so asking for b later sends nothing."""
    import openai.resources.batches as batches_api

    from tests.helpers.batch_server import BatchServer

    cache = tmp_path / "c.jsonl"
    real_create = batches_api.Batches.create

    def create_then_die(self, **kw):
        real_create(self, **kw)
        raise KeyboardInterrupt

    with BatchServer() as server:
        config = TeacherConfig(backend="openai", mode="batch", model="batch-model", base_url=server.base_url,
                               api_key_env="CITING_TEST_NO_SUCH_KEY", batch_poll_interval=0.01, max_tokens=16,
                               timeout=5.0)
        monkeypatch.setattr(batches_api.Batches, "create", create_then_die)
        with pytest.raises(KeyboardInterrupt):
            Teacher(config, cache_path=cache).complete([user("a"), user("b sample")])
        monkeypatch.setattr(batches_api.Batches, "create", real_create)
        assert Teacher(config, cache_path=cache).complete([user("a")]) == ["Answer to: a"]
        later = Teacher(config, cache_path=cache)
        assert later.complete([user("b sample")]) == ["Answer to: b sample"]
        assert later.ledger.cache_hits == 1 and len(server.batches) == 1 and server.uploads == 1


# --------------------------------------------------------------------------------------------------
# The preflight belongs to the backend
# --------------------------------------------------------------------------------------------------


def test_local_preflight_loads_the_config_only(tiny_model_dir, tmp_path):
    """The local backend's own check is enough: no request is sent and nothing is cached."""
    cache = tmp_path / "cache.jsonl"
    Teacher.preflight(TeacherConfig(backend="local", model=str(tiny_model_dir)), cache_path=cache)
    assert not cache.exists()
    from citing_trl.models import ModelLoadError

    with pytest.raises(ModelLoadError, match="--teacher_model .*the local teacher cannot be loaded"):
        Teacher.preflight(TeacherConfig(backend="local", model=str(tmp_path / "no_such_model")), cache_path=cache)


def test_remote_preflight_sends_one_request_when_the_backend_cannot_check_itself(tmp_path):
    """A backend without its own check (the default) gets one tiny request; an unreachable server is a
    TeacherError, not a traceback."""
    assert backends.OpenAIBackend.preflight(TeacherConfig(backend="openai", model="m")) is False
    config = TeacherConfig(backend="openai", model="m", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout=2.0)
    with pytest.raises(TeacherError):
        Teacher.preflight(config, cache_path=tmp_path / "cache.jsonl")
