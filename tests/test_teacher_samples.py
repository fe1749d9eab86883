"""Teacher.complete_samples (contract C4): K answers per request, one cache key per sample, sample 0 shared
with complete_detailed, `n` when the server honours it, one request per sample when it does not."""

from __future__ import annotations

import json

import pytest

from citing_trl.teacher import Teacher, TeacherConfig, cache_key
from tests.helpers.fault_server import FaultServer, request_key


def msgs(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def config(server: FaultServer, **kw) -> TeacherConfig:
    base = dict(backend="openai", model="fault-model", base_url=server.base_url, api_key_env="CITING_TEST_NO_SUCH_KEY",
                backoff_base=0.01, backoff_max=0.05, timeout=5.0, temperature=0.8, max_concurrency=1)
    base.update(kw)
    return TeacherConfig(**base)


def test_samples_use_n_have_own_keys_and_a_rerun_sends_nothing(tmp_path):
    cache = tmp_path / "c.jsonl"
    requests = [msgs("q0"), msgs("q1"), msgs("q0")]  # a repeated request is sent once
    with FaultServer(n_mode="honour") as server:
        teacher = Teacher(config(server, max_concurrency=4), cache_path=cache)
        out = teacher.complete_samples(requests, 3)
        assert [[c.text for c in row] for row in out] == [
            ["Answer to: q0", "Answer to: q0 [choice 1]", "Answer to: q0 [choice 2]"],
            ["Answer to: q1", "Answer to: q1 [choice 1]", "Answer to: q1 [choice 2]"],
            ["Answer to: q0", "Answer to: q0 [choice 1]", "Answer to: q0 [choice 2]"],
        ]
        assert sorted(h.n for h in server.hits) == [3, 3]  # one call with n=3 per distinct request
        led = teacher.ledger
        assert (led.requests, led.deduplicated, led.requests_sent, led.completed, led.attempts) == (9, 3, 6, 6, 2)
        # prompt tokens are billed once per call, completion tokens summed over the choices
        per_call = len(json.dumps(msgs("q0"), ensure_ascii=False).split())  # the fault server's prompt count
        assert led.prompt_tokens == 2 * per_call and out[0][1].prompt_tokens == per_call
        assert led.completion_tokens == sum(len(c.text.split()) for row in out[:2] for c in row)
        keys = {rec_key for rec_key in teacher._cache.records}
        assert len(keys) == 6
        # sample 0 is exactly the key complete_detailed uses at this temperature / max_tokens
        assert cache_key("fault-model", msgs("q0"), 0.8, 512) in keys
        teacher.close()

        hits = server.total_hits
        again = Teacher(config(server), cache_path=cache)
        assert again.complete_samples(requests, 3) == out
        assert [c.text for c in again.complete_detailed(requests)] == [row[0].text for row in out]
        assert server.total_hits == hits and again.ledger.requests_sent == 0 and again.ledger.attempts == 0
        # asking for more samples later sends only the new ones (n=2 for samples 3 and 4)
        more = again.complete_samples(requests[:1], 5)
        assert more[0][:3] == out[0] and server.hits[-1].n == 2 and server.total_hits == hits + 1
        assert more[0][3].text == "Answer to: q0"  # choice 0 of the new call


def test_a_cached_single_answer_is_sample_zero(tmp_path):
    with FaultServer(n_mode="honour") as server:
        teacher = Teacher(config(server), cache_path=tmp_path / "c.jsonl")
        single = teacher.complete_detailed([msgs("x")])[0]
        out = teacher.complete_samples([msgs("x")], 2)[0]
        assert out[0] == single and [h.n for h in server.hits] == [1, 1]  # sample 1 alone: n is not needed
        assert teacher.ledger.cache_hits == 1


@pytest.mark.parametrize("mode", ["ignore", "reject"])
def test_server_without_n_gets_one_request_per_sample(tmp_path, mode):
    cache = tmp_path / "c.jsonl"
    requests = [msgs("a"), msgs("b")]
    with FaultServer(n_mode=mode) as server:
        teacher = Teacher(config(server), cache_path=cache)
        out = teacher.complete_samples(requests, 3)
        assert [[c.text for c in row] for row in out] == [["Answer to: a"] * 3, ["Answer to: b"] * 3]
        ns = [h.n for h in server.hits]
        # the first call tries n=3; after the short answer / refusal every sample is its own request
        assert ns[0] == 3 and all(n == 1 for n in ns[1:])
        assert sum(1 for h in server.hits if h.outcome == "ok") == 6  # the n=3 call that got one choice counts
        assert server.total_hits == (6 if mode == "ignore" else 7)
        assert teacher.ledger.completed == 6 and teacher.ledger.failures == 0
        assert ("n_refused" in teacher.ledger.errors) == (mode == "reject")
        assert len(teacher._cache.records) == 6
        teacher.close()
        hits = server.total_hits
        Teacher(config(server), cache_path=cache).complete_samples(requests, 3)
        assert server.total_hits == hits
        assert server.successes[request_key(msgs("a"))] == 3


def test_bad_num_samples_is_refused(tmp_path):
    teacher = Teacher(TeacherConfig(backend="local", model="unused"))
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="num_samples"):
            teacher.complete_samples([msgs("x")], bad)


def test_local_backend_samples_are_seeded_and_cached(tiny_model_dir, tmp_path):
    from citing_trl.models import load_model

    model, tokenizer = load_model(str(tiny_model_dir))
    config_ = TeacherConfig(backend="local", model="tiny", max_tokens=6, temperature=1.0, local_batch_size=4)
    requests = [msgs("Explain item 1."), msgs("Describe a fox.")]
    cache = tmp_path / "local.jsonl"
    teacher = Teacher(config_, cache_path=cache, model=model, tokenizer=tokenizer)
    out = teacher.complete_samples(requests, 3)
    assert len(out) == 2 and all(len(row) == 3 for row in out)
    assert len({c.text for c in out[0]}) > 1  # sampled with different seeds
    assert teacher.ledger.completed == 6 and len(teacher._cache.records) == 6
    teacher.close()
    # reproducible: a fresh teacher without the cache draws the same samples; sample 0 = complete_detailed
    fresh = Teacher(config_, model=model, tokenizer=tokenizer)
    assert fresh.complete_samples(requests, 3) == out
    assert Teacher(config_, model=model, tokenizer=tokenizer).complete_detailed(requests) == [row[0] for row in out]
    # a rerun on the cache generates nothing (the model is never loaded)
    again = Teacher(TeacherConfig(backend="local", model="tiny", max_tokens=6, temperature=1.0), cache_path=cache)
    assert again.complete_samples(requests, 3) == out and again._model is None
    assert again.ledger.requests_sent == 0 and again.ledger.cache_hits == 6
