"""vLLM's OpenAI-compatible server as the teacher and the judge, through the project's `openai` teacher backend:
rubric design, revisions with `n` samples per request (best-of-K) and the pairwise judge, against SmolLM2 served
by `python -m vllm.entrypoints.openai.api_server` on 127.0.0.1 (the fixture is in tests/conftest.py)."""

from __future__ import annotations

import json
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def teacher_config(served, **kw):
    from citing_trl.teacher import TeacherConfig

    return TeacherConfig(backend="openai", model=served.model, base_url=served.base_url,
                         api_key_env="CITING_TEST_NO_SUCH_KEY", timeout=300.0, max_concurrency=4, **kw)


def test_it_is_vllm_that_serves(vllm_serve_smollm2):
    with urllib.request.urlopen(vllm_serve_smollm2.base_url + "/models", timeout=10) as r:
        models = json.load(r)["data"]
    assert [m["id"] for m in models] == [vllm_serve_smollm2.model] and models[0]["owned_by"] == "vllm"


def test_vllm_server_revisions_with_n_samples_and_repeatable_greedy(vllm_serve_smollm2, tmp_path):
    from citing_trl.prompts import revision_messages
    from citing_trl.teacher import Teacher

    requests = [revision_messages("Name a primary colour.", "", "Good: names one. Bad: rambles.", "green"),
                revision_messages("What is 2 + 3?", "", "Good: the number. Bad: no number.", "six")]
    teacher = Teacher(teacher_config(vllm_serve_smollm2, max_tokens=24), cache_path=tmp_path / "t.jsonl")
    samples = teacher.complete_samples(requests, num_samples=3, temperature=1.0)
    assert [len(s) for s in samples] == [3, 3] and all(c.text.strip() for s in samples for c in s)
    assert teacher.ledger.attempts == 2  # one HTTP call per request: vLLM honours n
    assert len({c.text for c in samples[0]}) > 1  # independent samples, not one answer thrice
    # temperature 0 is repeatable on vLLM (greedy), request after request, without the cache
    greedy = [Teacher(teacher_config(vllm_serve_smollm2, max_tokens=24), cache_path=tmp_path / f"g{i}.jsonl")
              .complete(requests, temperature=0.0) for i in range(2)]
    assert greedy[0] == greedy[1]


def test_vllm_server_designs_a_rubric_or_quotes_why_not(vllm_serve_smollm2):
    from citing_trl.rubric import RubricDesignError, design_rubric
    from citing_trl.teacher import Teacher

    teacher = Teacher(teacher_config(vllm_serve_smollm2, max_tokens=160, max_retries=1))
    instructions = ["Write a haiku about rain.", "What is the capital of Peru?", "Summarise: cats sleep a lot.",
                    "Translate 'good morning' into Spanish.", "Give two tips for studying."]
    try:
        rubric = design_rubric(instructions, teacher, sample_size=5, batch_size=5, max_categories=3, seed=0,
                               max_repairs=1)
    except RubricDesignError as err:  # a 135M model may not keep to the JSON shape: the error says where
        assert "batch 1/1" in str(err) and teacher.ledger.requests == 2
    else:
        assert 1 <= len(rubric.categories) <= 3 and rubric.teacher_model == vllm_serve_smollm2.model
    assert teacher.ledger.failures == 0 and teacher.ledger.completed >= 1


def test_vllm_server_as_the_judge(vllm_serve_smollm2, tmp_path):
    from citing_trl.evaluation.judge import PairwiseJudge

    aspects = {"articulate", "in-depth", "comprehensive"}
    from citing_trl.teacher import Teacher

    items = [{"instruction": "What is the capital of France?", "input": "", "a": "Paris.", "b": "I do not know."},
             {"instruction": "Is ice cold?", "input": "", "a": "no", "b": "Yes, ice is frozen water and feels cold."}]
    teacher = Teacher(teacher_config(vllm_serve_smollm2, temperature=0.0), cache_path=tmp_path / "judge.jsonl")
    judge = PairwiseJudge(teacher, max_parse_retries=1)
    out = judge.compare(items)
    assert len(out) == 2 and all(set(v) == aspects for v in out)
    assert all(set(v.values()) <= {"a", "b", "tie", "unparsed"} for v in out)
    assert teacher.ledger.failures == 0 and teacher.ledger.requests_sent == 4 + judge.stats.reasked
