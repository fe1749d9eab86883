"""The comparison run's one results table reads the evaluation's paired statistics, the reward records and the
stage markers; it computes nothing of its own."""

from __future__ import annotations

import json

from citing_trl.baselines.compare_table import compare_table
from citing_trl.evaluation.config import EvaluationArguments, JudgeArguments, judge_config
from citing_trl.evaluation.runner import run_evaluation
from citing_trl.stages import run_stage
from tests.test_paired import _qa_files


def test_table_rows_cells_paired_difference_and_records(tmp_path):
    citing, sft = _qa_files(tmp_path)
    out = tmp_path / "run"
    args = EvaluationArguments(answers=[f"citing={citing}", f"sft={sft}"], reference="citing",
                               output_dir=str(out / "eval"), bootstrap_samples=300)
    run_evaluation(args, judge_config(args, JudgeArguments(judge_backend="none")))
    (out / "raft").mkdir()
    (out / "raft" / "reward.json").write_text(json.dumps({"kind": "gold"}))
    (out / "reward_model").mkdir()
    (out / "reward_model" / "eval_metrics.json").write_text(json.dumps({"held_out_pairs": 100, "held_out_accuracy": 0.52}))
    (out / "sft_more").mkdir()
    (out / "sft_more" / "stats.json").write_text(json.dumps({
        "optimizer_steps": 35, "citing_optimizer_steps": 35,
        "tokens": {"sft_more": {"all": 900, "completion": 80}, "citing": {"all": 2000, "completion": 100}}}))
    run_stage(out / ".stages" / "citing.done", lambda: {"wall_s": 60.0}, name="citing")
    text = compare_table(out, ["sft", "raft", "citing"])
    lines = text.splitlines()
    header = lines[0]
    assert header.startswith("| system | boolq | squad_v2 | pooled | citing − system")
    row = {line.split(" | ")[0].strip("| "): line for line in lines if line.startswith("| ")}
    # sft: boolq right on 5 of 10 (0-3 and 9); citing r(1) right on 9 of 10; 5 fixed / 1 broken on boolq,
    # pooled over 20 rows 10 fixed / 6 broken -> +20.0 points
    assert "| ≈50.0 | ≈50.0 | ≈50.0 |" in row["sft"]  # boolq 5/10, squad_v2 5/10 (Paris everywhere), pooled 10/20
    assert "| +20.0 [" in row["sft"] and "| +20.0 [" in row["sft"] and "| 10 / 6 |" in row["sft"]
    assert "| 90.0 | ≈50.0 | ≈70.0 |" in row["citing (final)"]  # pooled chance 55%: n = 20 cannot rule it out
    assert "citing@0" in row and "citing@1" in row  # the self-revision steps are rows too
    assert "≈50.0" in row["citing (final)"]  # squad_v2: always abstaining = the chance level
    assert "*60.0*" in row["*chance level*"]  # boolq: the majority answer's share
    assert "raft" not in row  # no answers for raft: no row, whatever its reward record says
    assert "Self-revision citing@1 vs citing@0" in text and "fixed 3, broken 0" in text
    assert "pair accuracy 0.520" in text and "at chance" in text
    assert "sft_more: 35 optimizer steps (CITING's rounds: 35)" in text and "900 / 80 (CITING: 2000 / 100)" in text
    assert "citing 60.0" in text and "total 1.0 min" in text


def test_table_before_evaluation(tmp_path):
    assert "run the evaluate stage" in compare_table(tmp_path, ["sft", "citing"])
