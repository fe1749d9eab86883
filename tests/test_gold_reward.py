"""The verifiable reward (``reward: gold``): the gold gate's notion of right behind RewardScorer's interface."""

import pytest

from citing_trl.errors import DataError
from citing_trl.evaluation.gold import is_correct
from citing_trl.prompts import instruction_messages
from citing_trl.reward import GoldScorer

ROWS = [
    {"id": "b1", "source": "boolq", "instruction": "Is the sky blue?", "input": "", "answers": ["yes"]},
    {"id": "c1", "source": "commonsense_qa", "instruction": "Where do fish live?", "input": "A. tree\nB. water\nC. sky",
     "answers": ["B. water", "water"]},
    {"id": "n1", "source": "nq_open", "instruction": "Capital of France?", "input": "", "answers": ["Paris"]},
    {"id": "s1", "source": "squad_v2", "instruction": "Who won?", "input": "Context: nobody played.",
     "answers": ["The passage does not contain the answer."]},
]


def prompts(rows):
    return [instruction_messages(r["instruction"], r["input"]) for r in rows]


def test_gold_reward_is_the_gates_notion_of_right():
    scorer = GoldScorer(ROWS)
    answers = ["Yes, it is.", "B. water", "It is Paris.", "The passage does not contain the answer."]
    wrong = ["No.", "A. tree", "It is Lyon.", "Somebody won."]
    assert scorer.score(prompts(ROWS), answers) == [1.0, 1.0, 1.0, 1.0]
    assert scorer.score(prompts(ROWS), wrong) == [0.0, 0.0, 0.0, 0.0]
    for row, a, w in zip(ROWS, answers, wrong):  # the same function the gold gate reads
        assert is_correct(row["source"], a, row["answers"], row["input"]) is True
        assert is_correct(row["source"], w, row["answers"], row["input"]) is False
    assert scorer(prompts(ROWS)[:1], ["yes"]) == [1.0]  # callable as a reward function f(prompts, completions)


def test_gold_reward_refuses_rows_without_gold_and_unknown_prompts():
    with pytest.raises(DataError, match="row 'x1'.*no gold"):
        GoldScorer([{"id": "x1", "source": "alpaca", "instruction": "Write a poem.", "input": "", "answers": []}])
    scorer = GoldScorer(ROWS[:1])
    with pytest.raises(DataError, match="no training row has the prompt"):
        scorer.score(instruction_messages("Something else?"), ["yes"])
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        scorer.score(prompts(ROWS[:1]) * 2, ["yes"])
