"""Verified revisions (issue 13): keeping right answers, the revision gate, best-of-K teacher samples and the
fix/break report. The end-to-end test runs one CITING round on the tiny model with the oracle teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trl import ModelConfig

from citing_trl.citing_trainer import CitingConfig
from citing_trl.pipeline import CitingArguments, CitingPipeline
from citing_trl.revision import append_jsonl, read_jsonl
from citing_trl.sft import DataArguments
from oracle_server import oracle_server

QA_ROWS = [
    {"instruction": "Answer the following question: which planet is called the red planet?", "output": "Mars"},
    {"instruction": "Answer the following question: what is the capital of France?", "output": "Paris"},
    {"instruction": "Answer the following question: how many legs does a spider have?", "output": "eight"},
    {"instruction": "Answer the following question: what gas do plants take in?", "output": "carbon dioxide"},
    {"instruction": "Answer the following question: who wrote Hamlet?", "output": "William Shakespeare"},
    {"instruction": "Answer the following question: what is frozen water called?", "output": "ice"},
]


def qa_file(tmp_path: Path) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({**r, "source": "nq_open", "answers": [r["output"]]}) + "\n" for r in QA_ROWS))
    return path


def oracle_parts(tmp_path: Path, model_dir: Path, base_url: str, **citing_overrides):
    data = DataArguments(dataset=str(qa_file(tmp_path)), max_samples=None)
    training = CitingConfig(
        output_dir=str(tmp_path / "run"), use_cpu=True, bf16=False, report_to="none", max_length=1024,
        per_device_train_batch_size=4, num_train_epochs=1, save_strategy="no", gradient_checkpointing=False,
        logging_steps=1, learning_rate=1e-3,
    )
    model = ModelConfig(model_name_or_path=str(model_dir), use_peft=True, lora_r=4, lora_alpha=8,
                        lora_target_modules=["q_proj", "v_proj"])
    citing = CitingArguments(
        num_rounds=1, num_instructions=len(QA_ROWS), rubric="default", rollout_max_new_tokens=8,
        rollout_batch_size=4, teacher_backend="openai", teacher_model="oracle", teacher_base_url=base_url,
        teacher_max_tokens=32, **citing_overrides,
    )
    return data, training, model, citing


def run_oracle_round(tmp_path: Path, model_dir: Path, **citing_overrides):
    """Round 0 with drafts written in advance (the pipeline resumes from rollouts on disk): every other
    draft is the gold answer, the rest are wrong. Returns (round dir, {id: draft}, {id: gold})."""
    with oracle_server(QA_ROWS) as server:
        pipe = CitingPipeline(*oracle_parts(tmp_path, model_dir, server.base_url, **citing_overrides))
        pipe.sft()
        rows = pipe.matched_instructions(pipe.rubric())
        gold = {r["id"]: r["output"] for r in rows}
        drafts = {r["id"]: (r["output"] if i % 2 == 0 else "I am not sure.") for i, r in enumerate(rows)}
        rdir = tmp_path / "run" / "round_0"
        rdir.mkdir(parents=True)
        append_jsonl(rdir / "rollouts.jsonl", [
            {"id": i, "response": d, "finish_reason": "stop", "completion_tokens": 3} for i, d in drafts.items()
        ])
        pipe.run()
    return rdir, drafts, gold


@pytest.fixture(scope="module")
def oracle_round(tmp_path_factory, tiny_model_dir):
    return run_oracle_round(tmp_path_factory.mktemp("oracle"), tiny_model_dir)


def test_right_draft_kept_by_teacher_becomes_training_row(oracle_round):
    rdir, drafts, gold = oracle_round
    right = {i for i, d in drafts.items() if d == gold[i]}
    trained = {r["id"]: r for r in read_jsonl(rdir / "revisions.jsonl")}
    assert right and set(trained) == set(drafts), "every oracle revision (kept right answers too) is trained on"
    assert all(trained[i]["revision"] == trained[i]["response"] == gold[i] for i in right)
    counts = json.loads((rdir / "revision_counts.json").read_text())
    assert counts == {"kept_identical": len(right), "accepted": len(drafts) - len(right)}
    summary = json.loads((rdir / "summary.json").read_text())
    assert summary["trained_rows"] == len(drafts)
    assert (rdir / "adapter" / "adapter_config.json").exists()


def test_keep_identical_off_drops_right_drafts(tmp_path, tiny_model_dir):
    rdir, drafts, gold = run_oracle_round(tmp_path, tiny_model_dir, keep_identical=False)
    right = {i for i, d in drafts.items() if d == gold[i]}
    counts = json.loads((rdir / "revision_counts.json").read_text())
    assert counts == {"identical": len(right), "accepted": len(drafts) - len(right)}
    assert {r["id"] for r in read_jsonl(rdir / "rejected.jsonl")} == right
