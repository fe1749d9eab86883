"""Pairwise judge: parsing, the both-orders rule, re-asking unreadable replies, resume without resending."""

import json
import re

import pytest

from citing_trl.evaluation.judge import PairwiseJudge, combine, parse_verdicts
from citing_trl.teacher import Teacher, TeacherConfig
from tests.helpers.fault_server import FaultServer

ASPECTS = ["articulate", "in-depth", "comprehensive"]


def config(server, **kw):
    return TeacherConfig(**{"backend": "openai", "model": "judge-model", "base_url": server.base_url,
                            "api_key_env": "CITING_TEST_NO_SUCH_KEY", "backoff_base": 0.01, "backoff_max": 0.05,
                            "timeout": 5.0, **kw})


def shown(messages):
    """(answer shown first, answer shown second) in the first user turn of a judge request."""
    text = messages[0]["content"]
    a = re.search(r"### Answer A\n(.*?)\n\n### Answer B", text, re.DOTALL).group(1)
    b = re.search(r"### Answer B\n(.*?)\n\n", text, re.DOTALL).group(1)
    return a, b


def prefers_good(messages):
    """A fair judge: the answer containing GOOD wins every aspect, whatever the order."""
    a, b = shown(messages)
    win = "A" if "GOOD" in a else ("B" if "GOOD" in b else "tie")
    return json.dumps({k: win for k in ASPECTS})


ITEMS = [
    {"instruction": "q1", "input": "", "a": "GOOD answer", "b": "meh"},
    {"instruction": "q2", "input": "ctx", "a": "meh", "b": "GOOD one"},
    {"instruction": "q3", "input": "", "a": "same", "b": "same too"},
]


@pytest.mark.parametrize("text, expected", [
    ('{"articulate": "A", "in-depth": "B", "comprehensive": "tie"}', {"articulate": "A", "in-depth": "B",
                                                                      "comprehensive": "tie"}),
    ('Sure!\n```json\n{"Articulate": "answer b", "in_depth": "A", "comprehensive": "Tie"}\n```',
     {"articulate": "B", "in-depth": "A", "comprehensive": "tie"}),
    ("articulate: A\nin-depth: B\ncomprehensive: tie", {"articulate": "A", "in-depth": "B", "comprehensive": "tie"}),
    ("B", {a: "B" for a in ASPECTS}),
    ('{"articulate": "A"}', {"articulate": "A"}),  # incomplete: the rest is missing
    ("I cannot decide between them.", {}),
    ('The answer "A" is better.', {a: "A" for a in ASPECTS}),
    ("A\n\nThe function total() adds the numbers.", {a: "A" for a in ASPECTS}),  # a verdict on its own line
    ('The better answer is: **B**', {a: "B" for a in ASPECTS}),
    ("A 18% tip of $84 is $15.12.", {}),  # an article, not a verdict
    ("Answer A is better than answer B, but the answer is B.", {}),  # two different letters

    ('{"articulate": "maybe"}', {}),
])
def test_parse_verdicts(text, expected):
    assert parse_verdicts(text, ASPECTS) == expected


def test_order_swap_rule():
    # first order shows a first; second order shows b first, so "A" in the second order means b
    assert combine("A", "B") == "a"  # a wins in both orders
    assert combine("B", "A") == "b"
    assert combine("A", "A") == "tie"  # the first-shown answer always wins: a flip -> tie
    assert combine("B", "B") == "tie"
    assert combine("A", "tie") == "tie"
    assert combine("tie", "tie") == "tie"
    assert combine(None, "A") == "unparsed"


def test_fair_judge_joint_mode_and_rerun_sends_nothing(tmp_path):
    with FaultServer(reply=prefers_good) as server:
        teacher = Teacher(config(server), cache_path=tmp_path / "judge.jsonl")
        judge = PairwiseJudge(teacher)
        out = judge.compare(ITEMS)
        assert out == [{k: "a" for k in ASPECTS}, {k: "b" for k in ASPECTS}, {k: "tie" for k in ASPECTS}]
        assert server.total_hits == 6  # 3 pairs x 2 orders, one joint request each
        assert judge.stats.consistency_rate == 1.0
        assert judge.stats.first_position_win_share == 0.5  # 2 pairs x 2 orders x 3 aspects, half first
        again = PairwiseJudge(Teacher(config(server), cache_path=tmp_path / "judge.jsonl"))
        assert again.compare(ITEMS) == out
        assert server.total_hits == 6  # the rerun sent 0 requests


def test_per_aspect_mode_sends_one_request_per_aspect(tmp_path):
    def reply(messages):
        a, b = shown(messages)
        return '{"winner": "%s"}' % ("A" if "GOOD" in a else "B" if "GOOD" in b else "tie")

    with FaultServer(reply=reply) as server:
        judge = PairwiseJudge(Teacher(config(server)), mode="per_aspect", aspects=["articulate", "in-depth"])
        assert judge.compare(ITEMS[:2]) == [{"articulate": "a", "in-depth": "a"}, {"articulate": "b", "in-depth": "b"}]
        assert server.total_hits == 2 * 2 * 2


def test_position_biased_judge_gives_ties_and_shows_its_bias(tmp_path):
    with FaultServer(reply=lambda m: json.dumps({k: "A" for k in ASPECTS})) as server:
        judge = PairwiseJudge(Teacher(config(server)))
        out = judge.compare(ITEMS)
        assert all(v == "tie" for r in out for v in r.values())
        assert judge.stats.consistency_rate == 0.0
        assert judge.stats.first_position_win_share == 1.0


def test_unreadable_reply_is_reasked_with_a_different_request_then_counted(tmp_path):
    def reply(messages):
        if len(messages) == 1:
            return "Both answers have merit."  # unreadable first reply
        if "q1" in messages[0]["content"]:
            return prefers_good(messages[:1])  # the re-ask is answered properly
        return "Still thinking."  # q2 never gives a verdict

    cache = tmp_path / "judge.jsonl"
    with FaultServer(reply=reply) as server:
        judge = PairwiseJudge(Teacher(config(server), cache_path=cache), max_parse_retries=2)
        out = judge.compare(ITEMS[:2])
        assert out[0] == {k: "a" for k in ASPECTS}
        assert out[1] == {k: "unparsed" for k in ASPECTS}
        # q1: 2 orders x (ask + 1 re-ask); q2: 2 orders x (ask + 2 re-asks)
        assert server.total_hits == 4 + 6
        assert len(set(server.arrivals)) == 10  # every re-ask was a different request
        s = judge.stats
        assert (s.unparsed, s.unparsed_orders, s.reasked) == (3, 6, 2 + 4)
        assert s.consistency_rate == 1.0  # unparsed judgements are left out of the rate
        rerun = PairwiseJudge(Teacher(config(server), cache_path=cache), max_parse_retries=2)
        assert rerun.compare(ITEMS[:2]) == out
        assert server.total_hits == 10  # resumed from the cache: nothing sent twice


def test_bad_items_and_settings_are_named():
    with pytest.raises(ValueError, match="item #1.*'b'"):
        PairwiseJudge(teacher=None)._check([ITEMS[0], {"instruction": "x", "a": "y"}])
    with pytest.raises(ValueError, match="mode"):
        PairwiseJudge(teacher=None, mode="pairs")
    with pytest.raises(ValueError, match="unknown aspect"):
        PairwiseJudge(teacher=None, aspects=["funny"])


@pytest.mark.slow
def test_judge_against_served_smollm2_verdicts_or_counted_failures(serve_smollm2, tmp_path):
    """The real 135M model behind `transformers serve`: every pair ends as a verdict or a counted unparsed,
    never a crash, and a rerun with the same cache sends nothing."""
    cfg = TeacherConfig(backend="openai", model=serve_smollm2.model, base_url=serve_smollm2.base_url,
                        api_key_env="CITING_TEST_NO_SUCH_KEY", timeout=180.0, max_concurrency=2)
    items = [
        {"instruction": "What is the capital of France?", "input": "", "a": "Paris.", "b": "I do not know."},
        {"instruction": "Name a primary colour.", "input": "", "a": "Blue is a primary colour.", "b": "Green grass."},
        {"instruction": "Is ice cold?", "input": "", "a": "no", "b": "Yes, ice is frozen water and feels cold."},
    ]
    cache = tmp_path / "judge.jsonl"
    teacher = Teacher(cfg, cache_path=cache)
    judge = PairwiseJudge(teacher, max_parse_retries=1)
    out = judge.compare(items)
    assert len(out) == 3
    for verdicts in out:
        assert set(verdicts) == set(ASPECTS) and set(verdicts.values()) <= {"a", "b", "tie", "unparsed"}
    s = judge.stats
    assert s.judgements == 9 and s.unparsed == sum(v == "unparsed" for r in out for v in r.values())
    assert teacher.ledger.failures == 0 and teacher.ledger.requests_sent == 6 + s.reasked
    rerun_teacher = Teacher(cfg, cache_path=cache)
    assert PairwiseJudge(rerun_teacher, max_parse_retries=1).compare(items) == out
    assert rerun_teacher.ledger.requests_sent == 0 and rerun_teacher.ledger.cache_hits == rerun_teacher.ledger.requests
