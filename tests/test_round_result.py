"""RoundResult: a round's result in memory, saved to round_<k>/ and read back to resume."""

from __future__ import annotations

import json

from citing_trl.jsonl import append_jsonl
from citing_trl.round_result import RoundResult, read_rollouts


def result(accepted=True) -> RoundResult:
    return RoundResult(
        1, {"a": "draft a", "b": "draft b"},
        accepted=[{"id": "a", "response": "draft a", "revision": "better a", "round": 1}] if accepted else [],
        rejected=[{"id": "b", "response": "draft b", "revision": "", "reason": "empty"}],
        counts={"accepted": 1, "empty": 1} if accepted else {"empty": 2},
        usage={"requests": 2, "kept_rows": 1}, verification={"revision_gate": "gold", "ungated_rows": 0},
    )


def test_saved_round_reads_back_equal(tmp_path):
    rdir = tmp_path / "round_1"
    rdir.mkdir()
    append_jsonl(rdir / "rollouts.jsonl", [{"id": "a", "response": "draft a", "finish_reason": "stop"},
                                           {"id": "b", "response": "draft b", "finish_reason": "length"}])
    made = result()
    made.save(rdir)
    assert json.loads((rdir / "revision_counts.json").read_text()) == made.counts
    loaded = RoundResult.load(rdir, 1)
    assert loaded == made  # no summary yet: not trained, no adapter
    assert loaded.adapter is None and loaded.train_loss is None
    made.train_loss, made.adapter = 0.5, rdir / "adapter"
    summary = made.summary(instructions=2, teacher_model="t", revision_settings={}, timings={"training_s": 1.0})
    assert list(summary) == ["round", "instructions", "revision_counts", "trained_rows", "train_loss", "teacher_model",
                             "revision_settings", "teacher_usage", "verification", "timings_s"]
    (rdir / "summary.json").write_text(json.dumps(summary))
    assert RoundResult.load(rdir, 1) == made  # a finished round: its adapter and loss come back too


def test_round_that_kept_nothing_is_not_marked_done(tmp_path):
    result(accepted=False).save(tmp_path)
    assert not (tmp_path / "revisions.jsonl").exists()
    assert (tmp_path / "rejected.jsonl").exists() and (tmp_path / "revision_counts.json").exists()


def test_rollouts_of_every_shard(tmp_path):
    append_jsonl(tmp_path / "rollouts.rank0.jsonl", [{"id": "a", "response": "x"}])
    append_jsonl(tmp_path / "rollouts.rank1.jsonl", [{"id": "b", "response": "y"}])
    assert read_rollouts(tmp_path) == {"a": "x", "b": "y"}
    assert read_rollouts(tmp_path, full=True)["b"] == {"id": "b", "response": "y"}
