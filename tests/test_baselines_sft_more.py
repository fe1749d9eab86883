"""sft_more, the compute-matched control: it trains exactly as many optimizer steps as a CITING run's rounds took,
on the gold answers of the rows they trained on, counts tokens the same way on both sides, and refuses a run
folder it cannot match with one clear line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from citing_trl.baselines.sft_more import (CitingRunError, SFTMoreConfig, gold_rows, read_citing_run,
                                           run_sft_more)
from citing_trl.jsonl import read_jsonl, write_jsonl
from citing_trl.pipeline import CitingPipeline
from citing_trl.sft import DataArguments
from conftest import REPO, tiny_citing_parts

TRAIN = dict(use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=1, learning_rate=1e-3,
             max_length=512, dataloader_num_workers=0, disable_tqdm=True)


def model_config(model_dir):
    from trl import ModelConfig

    return ModelConfig(model_name_or_path=str(model_dir), lora_r=4, lora_alpha=8, lora_target_modules=["q_proj", "v_proj"])


def round_stats(steps: int, rows: int, batch: int = 2, all_tokens: int = 100, completion: int = 40) -> dict:
    return {"optimizer_steps": steps, "rows": rows, "epochs": 1.0, "per_device_train_batch_size": batch,
            "gradient_accumulation_steps": 1, "world_size": 1, "rows_per_step": batch,
            "tokens": {"all": all_tokens, "completion": completion}}


@pytest.fixture(scope="module")
def fake_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A finished CITING run folder as the pipeline leaves it, written by hand: round 0 took 3 optimizer steps on
    four rows (one of them without a gold answer), round 1 took 1 step on one row, at 2 rows per step."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path_factory.mktemp("citing_run")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    for folder in ("sft", "final"):
        peft.save_pretrained(run / folder)
        AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(run / folder)
    rows = [{"id": f"q{i}", "instruction": f"Describe item {i}.", "input": "", "output": f"Item {i} is small and blue.",
             "criteria": "- be precise"} for i in range(5)]
    rows[3]["output"] = ""  # a row without gold: skipped and counted
    write_jsonl(run / "instructions.jsonl", rows)
    for k, (ids, steps) in enumerate(((["q0", "q1", "q2", "q3"], 3), (["q4"], 1))):
        rdir = run / f"round_{k}"
        rdir.mkdir()
        write_jsonl(rdir / "revisions.jsonl", [{"id": i, "instruction": f"Describe item {i[1]}.", "input": "",
                                                "criteria": "- be precise", "response": "draft", "revision": "better",
                                                "round": k} for i in ids])
        (rdir / "train_stats.json").write_text(json.dumps(round_stats(steps, len(ids), all_tokens=100 + k,
                                                                      completion=40 + k)))
        (rdir / "summary.json").write_text(json.dumps({"round": k, "trained_rows": len(ids)}))
    return run


def expected_tokens(model_dir, rows: list[dict], times: int) -> dict:
    """Tokens of ``rows`` trained ``times`` times each, counted independently of the trainer: the chat template
    of prompt + answer (all), and its answer part (completion = everything after the generation prompt)."""
    from transformers import AutoTokenizer

    from citing_trl.prompts import instruction_messages

    tok = AutoTokenizer.from_pretrained(model_dir)
    total = {"all": 0, "completion": 0}
    for r in rows:
        prompt = instruction_messages(r["instruction"], r.get("input") or "")
        p_ids = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        full = tok.apply_chat_template(prompt + [{"role": "assistant", "content": r["output"]}], tokenize=True,
                                       return_dict=True)["input_ids"]
        total["all"] += times * len(full)
        total["completion"] += times * (len(full) - len(p_ids))
    return total


def test_steps_match_the_citing_run_and_tokens_are_reported(fake_run, tiny_model_dir, tmp_path):
    out = tmp_path / "sft_more"
    # batch 4 here is replaced by the run's 2 rows per step (match_batch); 4 gold rows x 2 epochs = 4 steps x 2 rows
    args = SFTMoreConfig(output_dir=str(out), per_device_train_batch_size=4, **TRAIN)
    run_sft_more(args, model_config(tiny_model_dir), fake_run)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["citing_optimizer_steps"] == 4 and stats["citing_steps_per_round"] == [3, 1]
    assert stats["optimizer_steps"] == 4 and stats["steps_matched"] is True
    assert stats["rows"]["citing_trained_rows"] == 5 and stats["rows"]["gold_rows"] == 4
    assert stats["rows"]["skipped_no_gold"] == 1 and stats["rows"]["skipped_not_found"] == 0
    assert stats["rows"]["epochs"] == pytest.approx(2.0)  # fewer gold rows than steps x batch: it cycles
    assert stats["rows_per_step"] == {"sft_more": 2, "citing": [2, 2], "matched": True}
    assert stats["tokens"]["citing"] == {"all": 201, "completion": 81}
    gold = [r for r in read_jsonl(fake_run / "instructions.jsonl") if r["output"]]
    assert stats["tokens"]["sft_more"] == expected_tokens(tiny_model_dir, gold, times=2)
    assert (out / "adapter_config.json").is_file() and (out / "done").is_file()

    # the adapter loads as the answering stage loads it, and training moved it away from the SFT start
    from safetensors.torch import load_file

    from citing_trl.models import load_model

    load_model(str(tiny_model_dir), adapter=str(out))
    before, after = load_file(fake_run / "sft" / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)

    # a rerun finds the done marker and trains nothing
    mtime = (out / "adapter_model.safetensors").stat().st_mtime_ns
    run_sft_more(args, model_config(tiny_model_dir), fake_run)
    assert (out / "adapter_model.safetensors").stat().st_mtime_ns == mtime


def test_max_steps_cannot_be_set_apart_from_the_run(fake_run, tiny_model_dir, tmp_path):
    args = SFTMoreConfig(output_dir=str(tmp_path / "o"), max_steps=7, **TRAIN)
    with pytest.raises(Exception, match=r"--max_steps is set from the CITING run \(4 optimizer steps\)"):
        run_sft_more(args, model_config(tiny_model_dir), fake_run)


def test_gold_rows_keep_round_repeats_and_fail_when_none_is_left(fake_run):
    record = read_citing_run(fake_run)
    rows, counts = gold_rows(record, read_jsonl(fake_run / "instructions.jsonl"))
    assert [r["id"] for r in rows] == ["q0", "q1", "q2", "q4"] and [r["round"] for r in rows] == [0, 0, 0, 1]
    assert rows[0]["output"] == "Item 0 is small and blue."
    # the gold looked up by text when ids differ (another loader), and nothing left is an error
    renamed = [{**r, "id": "x" + r["id"]} for r in read_jsonl(fake_run / "instructions.jsonl")]
    assert len(gold_rows(record, renamed)[0]) == 4
    with pytest.raises(CitingRunError.__mro__[1], match="none of the 5 rows"):
        gold_rows(record, [{**r, "output": ""} for r in renamed])


def broken_copy(src: Path, dst: Path, remove: str) -> Path:
    import shutil

    shutil.copytree(src, dst)
    target = dst / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    return dst


@pytest.mark.parametrize("remove, message", [
    ("round_1/train_stats.json", "round_1/train_stats.json is missing: the run was made before CITING recorded"),
    ("final", "the run is not finished"),
    ("round_0/summary.json", "round_0 is not finished"),
])
def test_unusable_citing_run_is_refused(fake_run, tmp_path, remove, message):
    with pytest.raises(CitingRunError, match=message):
        read_citing_run(broken_copy(fake_run, tmp_path / "run", remove))


def test_bad_citing_run_is_one_line_from_the_launcher(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for bad, message in ((tmp_path / "nowhere", "no such folder"), (tmp_path, "no round_<k>/ folder")):
        proc = subprocess.run([sys.executable, str(REPO / "baselines" / "sft_more.py"), "--config",
                               str(REPO / "baselines" / "configs" / "sft_more_demo.yaml"), "--citing_run", str(bad),
                               "--output_dir", str(tmp_path / "out")], capture_output=True, text=True, env=env, cwd=REPO,
                              timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert errors == [f"error: --citing_run {bad}: {message}" + ("" if message == "no such folder" else
                                                                      errors[0].split(message, 1)[1])]
        assert "Traceback" not in proc.stderr


def test_the_pipeline_records_each_rounds_steps_and_tokens(tiny_model_dir, tmp_path):
    """A real (tiny) CITING run writes round_<k>/train_stats.json, and sft_more on it takes the same total steps."""
    parts = tiny_citing_parts(
        tmp_path, tiny_model_dir, DataArguments(dataset="demo", max_samples=8), num_rounds=2, num_instructions=6,
        rollout_max_new_tokens=8, teacher_backend="local", teacher_model=str(tiny_model_dir), teacher_max_tokens=8,
        teacher_temperature=1.0, reject_truncated=False,
    )
    parts[1].per_device_train_batch_size = 2
    CitingPipeline(*parts).run()
    run = tmp_path / "run"
    total = 0
    for k in range(2):
        stats = json.loads((run / f"round_{k}" / "train_stats.json").read_text())
        trained = len(read_jsonl(run / f"round_{k}" / "revisions.jsonl"))
        assert stats["revision_rows"] == stats["rows"] == trained and stats["replayed_rows"] == 0
        assert stats["optimizer_steps"] == math.ceil(trained / 2) and stats["rows_per_step"] == 2
        assert 0 < stats["tokens"]["completion"] < stats["tokens"]["all"]
        total += stats["optimizer_steps"]
    out = tmp_path / "sft_more"
    run_sft_more(SFTMoreConfig(output_dir=str(out), **TRAIN), model_config(tiny_model_dir), run)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["optimizer_steps"] == stats["citing_optimizer_steps"] == total
