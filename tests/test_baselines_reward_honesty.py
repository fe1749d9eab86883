"""Reward-model honesty and the reward a rival optimises: the held-out pair accuracy with its Wilson interval and
the at-chance label (hand-worked values), reward_model_quality() for other code, reward_for_run()'s flags and
reward.json, and reward-model pairs for the whole QA mixture (BoolQ, CommonsenseQA, NQ-open, SQuAD v2)."""

from __future__ import annotations

import json
import logging
import random
from collections import Counter

import pytest

from citing_trl.baselines.preferences import (
    PreferenceArguments,
    load_preferences,
    multiple_choice_pairs,
    passage_sentences,
    rejected_answer,
)
from citing_trl.baselines.reward_model import (
    accuracy_summary,
    pair_accuracy,
    reward_for_run,
    reward_model_quality,
    wilson_interval,
    write_reward_info,
)
from citing_trl.data import NO_ANSWER
from citing_trl.errors import ConfigError, DataError
from citing_trl.evaluation.gold import is_correct
from citing_trl.reward import GoldScorer

# ------------------------------------------------------------------------------------------------ interval


def test_wilson_interval_hand_worked():
    # 52 of 100: p = .52, z = 1.96: centre = (.52 + 1.92/100) / 1.038416 = .51927, half = 1.96 * sqrt(.002496 +
    # .0000960) / 1.038416 = .09609 -> [.42317, .61535] (the 0.52 reward model: at chance).
    low, high = wilson_interval(52, 100)
    assert (low, high) == pytest.approx((0.423166, 0.615354), abs=1e-5)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-5)  # never the degenerate [0, 0]
    assert wilson_interval(10, 10) == pytest.approx((0.722467, 1.0), abs=1e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("wins,n,at_chance,better", [
    (52, 100, True, False),   # the reward model
    (60, 100, False, True),   # low end .5020 > .5: the smallest count above chance at n = 100
    (59, 100, True, False),   # low end .4920: still at chance at this n
    (30, 100, False, False),  # below chance (e.g. it prefers the wrong side)
])
def test_accuracy_summary_labels(wins, n, at_chance, better):
    s = accuracy_summary(wins, n, ties=1)
    assert s["held_out_pairs"] == n and s["held_out_accuracy"] == wins / n and s["held_out_ties"] == 1
    assert s["at_chance"] is at_chance and s["better_than_chance"] is better
    low, high = s["held_out_ci95"]
    assert low < wins / n < high


class TableScorer:
    """Scores by a lookup table of answer text (a stand-in reward model)."""

    def __init__(self, table):
        self.table = table

    def score(self, prompts, completions):
        return [self.table.get(c, 0.0) for c in completions]


def test_pair_accuracy_counts_ties_wrong_and_reports_per_kind():
    from citing_trl.baselines.preferences import make_pair

    pairs = [{**make_pair(f"p{i}", "Q?", "", c, r), "kind": k} for i, (c, r, k) in enumerate([
        ("good", "bad", "yes_no"), ("good", "worse", "yes_no"), ("tie", "tie2", "choice"), ("bad", "good", "choice"),
    ])]
    out = pair_accuracy(TableScorer({"good": 2.0, "bad": 1.0, "worse": 0.0, "tie": 1.0, "tie2": 1.0}), pairs)
    assert out["held_out_accuracy"] == 0.5 and out["held_out_wins"] == 2 and out["held_out_ties"] == 1
    assert out["at_chance"] is True and out["held_out_pairs"] == 4
    assert out["held_out_by_kind"] == {"choice": {"n": 2, "accuracy": 0.0}, "yes_no": {"n": 2, "accuracy": 1.0}}


def test_reward_model_quality_reads_new_old_and_missing_metrics(tmp_path):
    new = tmp_path / "new"
    new.mkdir()
    (new / "eval_metrics.json").write_text(json.dumps({"train_pairs": 300, **accuracy_summary(70, 100)}))
    q = reward_model_quality(new)
    assert q["label"] == "above chance" and q["at_chance"] is False and q["held_out_pairs"] == 100
    old = tmp_path / "old"  # written before the interval existed: completed from accuracy and n
    old.mkdir()
    (old / "eval_metrics.json").write_text(json.dumps({"held_out_pairs": 100, "held_out_accuracy": 0.52}))
    q = reward_model_quality(old)
    assert q["label"] == "at chance" and q["at_chance"] is True
    assert q["held_out_ci95"] == pytest.approx([0.423166, 0.615354], abs=1e-5)
    none = tmp_path / "none"
    none.mkdir()
    q = reward_model_quality(none)
    assert q["label"] == "unmeasured" and q["at_chance"] is None and q["held_out_pairs"] == 0


# ------------------------------------------------------------------------------------------------ reward_for_run

ROWS = [
    {"id": "b1", "source": "boolq", "instruction": "Is the sky blue?", "input": "", "output": "yes", "answers": ["yes"]},
    {"id": "n1", "source": "nq_open", "instruction": "Capital of France?", "input": "", "output": "Paris",
     "answers": ["Paris"]},
    {"id": "n2", "source": "nq_open", "instruction": "Odd one?", "input": "", "output": ")", "answers": [")"]},
]


def test_reward_for_run_flags(tmp_path):
    with pytest.raises(ConfigError, match="--reward_model rm contradicts --reward gold") as err:
        reward_for_run("gold", "rm", ROWS, "RAFT")
    assert err.value.flag == "reward_model"
    with pytest.raises(ConfigError, match="RAFT with --reward model needs --reward_model") as err:
        reward_for_run("model", None, ROWS, "RAFT")
    assert err.value.flag == "reward_model"
    scorer, info = reward_for_run("model", None, ROWS, "RRHF", need_model=False)  # candidates carry their scores
    assert scorer is None and info["kind"] == "model" and info["reward_model"] is None
    with pytest.raises(DataError, match="no gold answers"):
        reward_for_run("gold", None, [{"id": "a", "source": "alpaca", "instruction": "Write.", "answers": []}], "RAFT")


def test_reward_for_run_gold_writes_reward_json(tmp_path, caplog):
    scorer, info = reward_for_run("gold", None, ROWS, "RAFT")
    assert isinstance(scorer, GoldScorer) and len(scorer) == 3
    assert info["kind"] == "gold" and info["reward_model"] is None and info["rows"] == 3
    assert info["rows_gold_not_accepted"] == 1 and "n2" in caplog.text  # ")" normalises to nothing
    path = write_reward_info(tmp_path / "run", info)
    assert json.loads(path.read_text()) == info and path.name == "reward.json"


def test_reward_for_run_model_warns_at_chance_and_labels(tmp_path, monkeypatch, caplog):
    from citing_trl.baselines import reward_model

    monkeypatch.setattr(reward_model.RewardScorer, "load", classmethod(lambda cls, path: ("scorer", str(path))))
    rm = tmp_path / "rm"
    rm.mkdir()
    (rm / "eval_metrics.json").write_text(json.dumps(accuracy_summary(52, 100)))
    with caplog.at_level(logging.INFO):
        scorer, info = reward_for_run("model", str(rm), ROWS, "RRHF")
    assert scorer == ("scorer", str(rm))
    assert info["kind"] == "model" and info["reward_model"] == str(rm) and info["at_chance"] is True
    assert info["quality"]["held_out_pairs"] == 100 and "at chance" in info["label"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "RRHF is about to optimise the reward model" in warnings[0].getMessage()
    assert "0.520 (95% CI 0.423-0.615, n=100): at chance" in warnings[0].getMessage()
    caplog.clear()
    (rm / "eval_metrics.json").write_text(json.dumps(accuracy_summary(90, 100)))
    with caplog.at_level(logging.INFO):
        _, info = reward_for_run("model", str(rm), ROWS, "RRHF")
    assert info["at_chance"] is False and info["quality"]["label"] == "above chance"
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


# ------------------------------------------------------------------------------------------------ mixture pairs

PASSAGE = ("Title: Normans\nPassage: The Normans lived in Normandy. They spoke a Romance language called Norman. "
           "Rollo was their first ruler.")
MIXTURE = [
    {"id": "b1", "source": "boolq", "instruction": "Is it?", "input": "Passage: x", "output": "no", "answers": ["no"]},
    {"id": "c1", "source": "commonsense_qa", "instruction": "Where?", "input": "A. tree\nB. water\nC. sky",
     "output": "B. water", "answers": ["B. water", "water"]},
    {"id": "s1", "source": "squad_v2", "instruction": "Who ruled first?", "input": PASSAGE, "output": "Rollo",
     "answers": ["Rollo"]},
    {"id": "s2", "source": "squad_v2", "instruction": "Who ruled last?", "input": PASSAGE, "output": NO_ANSWER,
     "answers": [NO_ANSWER]},
    {"id": "n1", "source": "nq_open", "instruction": "Capital of France?", "input": "", "output": "Paris",
     "answers": ["Paris"]},
    {"id": "n2", "source": "nq_open", "instruction": "Capital of Italy?", "input": "", "output": "Rome",
     "answers": ["Rome", "Roma"]},
    {"id": "n3", "source": "nq_open", "instruction": "Where is the Louvre?", "input": "", "output": "Paris, France",
     "answers": ["Paris, France", "Paris"]},
]


def test_mixture_pairs_by_source():
    stats = Counter()
    pairs = multiple_choice_pairs(MIXTURE, seed=3, stats=stats)
    by_id = {p["id"]: p for p in pairs}
    got = {i: (p["kind"], p["chosen"][0]["content"], p["rejected"][0]["content"]) for i, p in by_id.items()}
    assert got["b1"] == ("yes_no", "no", "yes")
    assert got["c1"][:2] == ("choice", "B. water") and got["c1"][2] in ("A. tree", "C. sky")
    assert got["s1"] == ("answer_over_abstention", "Rollo", NO_ANSWER)
    assert got["s2"][:2] == ("abstention_over_passage", NO_ANSWER)
    assert got["s2"][2] in passage_sentences(PASSAGE)
    # NQ-open: another row's gold answer, never one this row's metric accepts (n1's "Paris" is right for n3)
    assert got["n1"][0] == "other_row_answer" and got["n1"][2] in ("Rome", "Paris, France")
    assert got["n3"][0] == "other_row_answer" and got["n3"][2] == "Rome"
    assert got["n2"][2] in ("Paris", "Paris, France")
    for p in pairs:  # the metric the gold reward uses: chosen right, rejected wrong
        row = next(r for r in MIXTURE if r["id"] == p["id"])
        assert is_correct(row["source"], p["chosen"][0]["content"], row["answers"], row["input"]) is True
        assert is_correct(row["source"], p["rejected"][0]["content"], row["answers"], row["input"]) is False
    assert stats == Counter(pairs_yes_no=1, pairs_choice=1, pairs_answer_over_abstention=1,
                            pairs_abstention_over_passage=1, pairs_other_row_answer=3)
    assert multiple_choice_pairs(MIXTURE, seed=3) == pairs  # seeded


def test_mixture_rows_without_a_pair_are_counted():
    alone = [MIXTURE[4]]  # the only NQ row: no other answer to draw
    assert rejected_answer(alone[0], random.Random(0), [("n1", "Paris")]) is None
    no_sentence = {**MIXTURE[3], "input": "Passage: Short."}
    stats = Counter()
    assert multiple_choice_pairs([*alone, no_sentence], stats=stats) == []
    assert stats == Counter(rows_without_pairs=2)
    assert passage_sentences("Title: T\nPassage: One two three. Four.\n\nConversation so far:\nQ: a b c?") == [
        "One two three."]


def test_mixture_pairs_from_shared_data(shared_data):
    spec = "+".join(f"{s}:{shared_data / f}@40" for s, f in [
        ("boolq", "boolq_dev.jsonl"), ("commonsense_qa", "commonsenseqa_dev.jsonl"), ("nq_open", "nq_open_dev.jsonl"),
        ("squad_v2", "squad_v2_dev_sample.json")])
    pairs, stats = load_preferences(PreferenceArguments(preferences=f"choices:{spec}"))
    kinds = Counter(p["kind"] for p in pairs)
    assert set(kinds) == {"yes_no", "choice", "other_row_answer", "answer_over_abstention", "abstention_over_passage"}
    assert sum(kinds.values()) == stats["pairs"] and stats["pairs"] >= 0.9 * sum(
        v for k, v in stats.items() if k.startswith("pairs_") or k == "rows_without_pairs")
    assert {p["source"] for p in pairs} == {"boolq", "commonsense_qa", "nq_open", "squad_v2"}
