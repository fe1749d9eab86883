"""Algorithm 1 end to end on the tiny random model with the in-process (local) teacher, and resuming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_citing_parts

from citing_trl.jsonl import read_jsonl
from citing_trl.memory import RECORD_KEYS
from citing_trl.pipeline import CitingPipeline
from citing_trl.sft import DataArguments

N_INSTRUCTIONS = 8


def parts(tmp_path: Path, model_dir: Path, **citing_overrides):
    return tiny_citing_parts(
        tmp_path, model_dir, DataArguments(dataset="demo", max_samples=12), num_rounds=2,
        num_instructions=N_INSTRUCTIONS, rollout_max_new_tokens=12, teacher_backend="local",
        teacher_model=str(model_dir), teacher_max_tokens=16,
        # a random model decodes greedily to a repeated token; sampling gives varied, non-empty revisions
        # and never reaches EOS, so its cut-off revisions are accepted here (the default rejects them)
        teacher_temperature=1.0, reject_truncated=False, **citing_overrides,
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("pipeline")
    pipe = CitingPipeline(*parts(tmp, tiny_model_dir))
    final = pipe.run()
    return tmp, final, pipe


def test_artifacts(finished_run):
    tmp, final, pipe = finished_run
    run = tmp / "run"
    assert (run / "sft" / "adapter_config.json").exists()
    rubric = json.loads((run / "rubric.json").read_text())
    assert len(rubric["categories"]) == 5
    rows = read_jsonl(run / "instructions.jsonl")
    assert len(rows) == N_INSTRUCTIONS
    assert all(r["criteria"] and r["category"] in {c["name"] for c in rubric["categories"]} for r in rows)
    for k in range(2):
        rdir = run / f"round_{k}"
        rollouts = read_jsonl(rdir / "rollouts.jsonl")
        assert sorted(r["id"] for r in rollouts) == sorted(r["id"] for r in rows)
        summary = json.loads((rdir / "summary.json").read_text())
        counts = summary["revision_counts"]
        assert sum(counts.values()) == N_INSTRUCTIONS
        accepted = read_jsonl(rdir / "revisions.jsonl")
        assert len(accepted) == counts.get("accepted", 0) + counts.get("kept_identical", 0) == summary["trained_rows"] > 0
        assert set(accepted[0]) >= {"instruction", "input", "category", "criteria", "response", "revision", "round"}
        assert all(a["round"] == k for a in accepted)
        assert (rdir / "adapter" / "adapter_config.json").exists()
        trained = json.loads((rdir / "train_stats.json").read_text())  # what sft_more matches: steps, rows, tokens
        assert trained["revision_rows"] == trained["rows"] == len(accepted) and trained["replayed_rows"] == 0
        assert trained["optimizer_steps"] == -(-len(accepted) // 4) and trained["rows_per_step"] == 4  # batch 4, 1 epoch
        assert 0 < trained["tokens"]["completion"] < trained["tokens"]["all"]
        usage = summary["teacher_usage"]  # this round's own teacher usage
        assert usage["requests"] == N_INSTRUCTIONS and usage["requests_sent"] + usage["cache_hits"] <= N_INSTRUCTIONS
        if k == 0:
            assert usage["requests_sent"] > 0 and usage["prompt_tokens"] > 0
    assert (final / "adapter_config.json").exists()
    card = (final / "README.md").read_text()
    assert "CITING" in card and "Rubric categories" in card


def test_round_two_revises_round_one_answers(finished_run):
    """rollout_mode='revise': round 1's student prompts contain round 0's answers."""
    tmp, _, _ = finished_run
    r0 = {r["id"]: r["response"] for r in read_jsonl(tmp / "run" / "round_0" / "rollouts.jsonl")}
    rejected = read_jsonl(tmp / "run" / "round_1" / "rejected.jsonl")
    accepted = read_jsonl(tmp / "run" / "round_1" / "revisions.jsonl")
    assert len(rejected) + len(accepted) == N_INSTRUCTIONS
    assert set(r0) == {r["id"] for r in rejected + accepted}


def test_rerun_skips_everything(finished_run, tiny_model_dir):
    tmp, _, _ = finished_run
    run = tmp / "run"
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and "final" not in p.parts}
    pipe = CitingPipeline(*parts(tmp, tiny_model_dir))
    pipe.run()
    after = {p: p.stat().st_mtime_ns for p in before}
    assert before == after, "a finished run must not redo any stage"
    assert pipe._teacher is None or pipe._teacher.ledger.summary()["requests_sent"] == 0


def test_interrupted_round_resumes_without_paying_twice(finished_run, tiny_model_dir):
    tmp, _, _ = finished_run
    run = tmp / "run"
    rdir = run / "round_1"
    # simulate a crash in round 1 after half the rollouts and all teacher answers were written
    lines = (rdir / "rollouts.jsonl").read_text().splitlines()
    (rdir / "rollouts.jsonl").write_text("\n".join(lines[: len(lines) // 2]) + "\n" + lines[len(lines) // 2][:10])
    for name in ("summary.json", "revisions.jsonl"):
        (rdir / name).unlink()
    import shutil

    shutil.rmtree(rdir / "adapter")
    pipe = CitingPipeline(*parts(tmp, tiny_model_dir))
    pipe.run()
    assert len(read_jsonl(rdir / "rollouts.jsonl")) == N_INSTRUCTIONS
    usage = pipe.teacher.ledger.summary()
    assert usage["requests_sent"] == 0 and usage["cache_hits"] == N_INSTRUCTIONS, usage
    assert (rdir / "summary.json").exists() and (run / "final" / "adapter_config.json").exists()


def test_memory_per_stage(finished_run):
    """Every stage that ran has a peak-memory record (citing_trl/memory.py) in memory.json, named as in timings.json."""
    tmp, _, pipe = finished_run
    memory = json.loads((tmp / "run" / "memory.json").read_text())
    timings = json.loads((tmp / "run" / "timings.json").read_text())
    stages = ["sft", "rubric", "matching"] + [f"round_{k}_{s}" for k in range(2)
                                               for s in ("rollouts", "revisions", "training")]
    assert list(memory["stages"]) == stages
    for name in stages:
        record = memory["stages"][name]
        assert tuple(record) == RECORD_KEYS
        assert f"{name}_s" in timings
        if record["rss_method"] is not None:  # Linux: a real figure, never below what the stage started with
            assert record["rss_peak_bytes"] >= record["rss_start_bytes"] > 0
    run = pipe.memory.summary()  # this run's own figures (a later test may resume into the same folder)
    assert list(run["stages"]) == stages
    assert run["process_peak_rss_bytes"] >= max(r["rss_peak_bytes"] or 0 for r in run["stages"].values())
    assert "last_run_peak_rss_bytes" in memory
