"""An ``ifeval`` row through the machinery that exists: the gold gate, best-of-K and the gold reward all read the
IFEval checker (through the source's gold metric), so a revision that follows the constraints is right."""

from __future__ import annotations

from citing_trl.evaluation.ifeval import encode_constraints
from citing_trl.prompts import instruction_messages
from citing_trl.reward import GoldScorer
from citing_trl.teacher import Completion
from citing_trl.verification import select_revisions
from tests.testing_utils import gold_gate

CONSTRAINTS = encode_constraints(["punctuation:no_comma", "startend:end_checker"],
                                 [{}, {"end_phrase": "That is all."}])
PASSES = "Rivers carry water to the sea. That is all."
FAILS = "Rivers, lakes and seas hold water."


def row(rid: str) -> dict:
    return {"id": rid, "instruction": "Describe rivers.\n\nDo not use any commas. End with 'That is all.'",
            "input": "", "criteria": "- Follow every constraint.", "category": "ifeval", "source": "ifeval",
            "answers": [CONSTRAINTS], "output": ""}


def done(*texts: str) -> list[Completion]:
    return [Completion(t, "stop", 10, 5) for t in texts]


def test_gold_gate_keeps_a_revision_that_follows_the_constraints_and_refuses_one_that_does_not():
    rows = [row("pass"), row("fail")]
    responses = {"pass": FAILS, "fail": FAILS}
    selection = select_revisions(rows, responses, [done(PASSES), done("Rivers, in short, flow.")], gold_gate)
    assert [r["id"] for r in selection.accepted] == ["pass"]
    assert [r["id"] for r in selection.rejected] == ["fail"]
    assert selection.counts["accepted"] == 1 and sum(selection.counts.values()) == 2


def test_best_of_k_picks_the_sample_the_checker_passes():
    selection = select_revisions([row("k")], {"k": FAILS}, [done(FAILS.replace(".", "!"), PASSES, FAILS + " Yes.")],
                                 gold_gate)
    assert len(selection.accepted) == 1
    assert PASSES in selection.accepted[0].values()


def test_gold_reward_scores_ifeval_rows_with_the_checker():
    r = row("x")
    scorer = GoldScorer([r])
    prompt = instruction_messages(r["instruction"], r["input"])
    assert scorer.score([prompt, prompt], [PASSES, FAILS]) == [1.0, 0.0]


def test_gold_score_ranks_constraint_rows_by_the_share_of_constraints_followed():
    from citing_trl.verification import gold_score

    r = row("s")
    assert gold_score(r, PASSES) == (1.0, 1.0)
    assert gold_score(r, "Rivers flow. That is all.") == (1.0, 1.0)
    assert gold_score(r, "Rivers flow, fast. That is all.") == (0.0, 0.5)  # one of two constraints followed
    assert gold_score(r, FAILS) == (0.0, 0.0)
