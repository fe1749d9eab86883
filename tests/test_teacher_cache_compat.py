"""A teacher cache written by an older version of the code still answers every request: a run started before a
change resumes after it and sends 0 requests.

``tests/fixtures/teacher_cache_v1.jsonl`` was written once by the ``Teacher`` of commit c66d190 (the single-file
``citing_trl/teacher.py``), with ``tests/fixtures/make_teacher_cache_v1.py``: live answers from the fake
OpenAI-compatible server and from a tiny local model, for the request kinds below. It is never regenerated;
if these tests fail, the cache key (or the cache file format) changed, and every user's cache would be lost.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from citing_trl.teacher import Teacher, TeacherConfig, cache_key

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import free_port  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "teacher_cache_v1.jsonl"


def user(text: str, system: str | None = None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]


@dataclass
class Case:
    """One call of the old Teacher: its settings, the requests and the keyword arguments of the call."""

    name: str
    config: dict
    requests: list[list[dict]]
    num_samples: int = 0  # 0: complete_detailed, else complete_samples(num_samples)
    call: dict = field(default_factory=dict)  # temperature / max_tokens overrides
    decoding: dict = field(default_factory=dict)  # what enters the key beyond temperature and max_tokens


OPENAI = dict(backend="openai", model="compat-openai")
CONTROLS = dict(repetition_penalty=1.3, no_repeat_ngram_size=3)
LOCAL = dict(backend="local", model="compat-local-tiny", max_tokens=8, local_batch_size=2)

CASES = [
    Case("openai plain", OPENAI, [user("What is the capital of France?"), user("Name a prime number.")]),
    Case("openai system, unicode, overrides", OPENAI, [user("Quelle heure est-il ? ☕", system="Réponds en français.")],
         call=dict(temperature=0.7, max_tokens=64)),
    Case("openai samples", OPENAI, [user("Name a colour.")], num_samples=3, call=dict(temperature=0.9)),
    Case("local plain", LOCAL, [user("b b b b")]),
    Case("local repetition controls", {**LOCAL, **CONTROLS}, [user("b b b b"), user("Describe a fox.")],
         decoding=CONTROLS),
    Case("local sampled with controls", {**LOCAL, **CONTROLS}, [user("Tell me about the sea.")], num_samples=2,
         call=dict(temperature=0.8), decoding=CONTROLS),
]

# The keys the old code wrote, per case: EXPECTED_KEYS[name][request][sample].
EXPECTED_KEYS = {
    "openai plain": [["09df9beb443aa5439b410fda4cea369d8fc4827932ba77959e6d30e6b6182d2f"],
                     ["853d76565a1853eaeb378df2e7c5550bedd730447f962893bf68899bdde8961e"]],
    "openai system, unicode, overrides": [["639a675d21fd1c6143d8ad1f7a15df542272f9e16214cc11ca4f3a88ae921ceb"]],
    "openai samples": [["e7b4b15bddfeaf314576090e581682189e18848e0d96caa6fa6ab0e9cb87d6c4",
                        "0e93e6e0d9ddbbf435c1100dea5166feeb5899c977bc72f4f22ebf6ca251a587",
                        "857251324b5671b0abf9600edb5ca31d120f595f4397250646a4a54b93f2eea9"]],
    "local plain": [["0c9d0e41be56c78a44b57fb9a670b2565c505563009a1267190512975293851a"]],
    "local repetition controls": [["9cbc41158c39e513f5d202e33f5ddfe9031313135857045c9ad54cf5c10acbc3"],
                                  ["a08fc3f22ed4ca0777ab5da63a56beadafca4ad5fbb10c13efeb507b2fcd720a"]],
    "local sampled with controls": [["e4c59e26c93695290fdccfbfd7865febcee4da137c9353a9c34119036683477f",
                                     "34e8646661c2a87202634e1815afba1fc1f65cd546a838f809c6cd566ced7412"]],
}


def call(teacher: Teacher, case: Case):
    """The answers of one case as ``out[request][sample]`` (a plain call has one sample)."""
    if case.num_samples:
        return teacher.complete_samples(case.requests, case.num_samples, **case.call)
    return [[c] for c in teacher.complete_detailed(case.requests, **case.call)]


def fixture_records() -> dict[str, dict]:
    return {rec["key"]: rec for rec in map(json.loads, FIXTURE.read_text(encoding="utf-8").splitlines())}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_cache_key_of_fixed_inputs_is_unchanged(case):
    config = TeacherConfig(**case.config)
    temperature = case.call.get("temperature", config.temperature)
    max_tokens = case.call.get("max_tokens", config.max_tokens)
    keys = [[cache_key(config.model, req, temperature, max_tokens, sample=j, **case.decoding)
             for j in range(max(case.num_samples, 1))] for req in case.requests]
    assert keys == EXPECTED_KEYS[case.name]
    # the Teacher puts exactly the same decoding settings into the key
    decoding = {k: v for k, v in Teacher(config).decoding_key().items() if v}
    assert decoding == case.decoding
    # and the old Teacher stored those very keys, for those very requests
    records = fixture_records()
    for req, sample_keys in zip(case.requests, keys):
        for j, key in enumerate(sample_keys):
            rec = records[key]
            assert (rec["model"], rec["messages"], rec["temperature"], rec["max_tokens"], rec.get("sample", 0)) == (
                config.model, req, temperature, max_tokens, j)


def test_fixture_holds_exactly_the_expected_keys():
    expected = {k for per_case in EXPECTED_KEYS.values() for per_request in per_case for k in per_request}
    assert set(fixture_records()) == expected and len(expected) == 11


def test_new_teacher_answers_an_old_cache_without_sending_anything(tmp_path):
    cache = tmp_path / "teacher_cache.jsonl"
    shutil.copyfile(FIXTURE, cache)
    records = fixture_records()
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: any request would fail
    for case in CASES:
        config = TeacherConfig(**case.config, base_url=dead, api_key_env="CITING_TEST_NO_SUCH_KEY", max_retries=0,
                               timeout=2.0)
        # for `local`, the model name is no folder: loading it (to answer anything) would fail
        with Teacher(config, cache_path=cache) as teacher:
            answers = call(teacher, case)
        for sample_keys, got in zip(EXPECTED_KEYS[case.name], answers):
            assert [(c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens) for c in got] == [
                (records[k]["text"], records[k].get("finish_reason"), records[k]["prompt_tokens"],
                 records[k]["completion_tokens"]) for k in sample_keys]
        led = teacher.ledger
        asked = len(case.requests) * max(case.num_samples, 1)
        assert (led.requests, led.cache_hits, led.requests_sent, led.attempts, led.completed, led.failures) == (
            asked, asked, 0, 0, 0, 0), case.name
    assert cache.read_bytes() == FIXTURE.read_bytes()  # nothing appended, nothing rewritten
