"""sft_more, the compute-matched control: it trains exactly as many optimizer steps as a CITING run's rounds took,
on the gold answers of the rows they trained on, counts tokens the same way on both sides, and refuses a run
folder it cannot match with one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

from citing_trl.baselines.sft_more import CitingRunError, SFTMoreConfig, gold_rows, read_citing_run, run_sft_more
from citing_trl.errors import DataError
from citing_trl.jsonl import read_jsonl, write_jsonl

TRAIN = dict(use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=1, learning_rate=1e-3,
             max_length=512, dataloader_num_workers=0, disable_tqdm=True)


def model_config(model_dir):
    from trl import ModelConfig

    return ModelConfig(model_name_or_path=str(model_dir), lora_r=4, lora_alpha=8, lora_target_modules=["q_proj", "v_proj"])


def round_stats(steps: int, rows: int, batch: int = 2, all_tokens: int = 100, completion: int = 40) -> dict:
    return {"optimizer_steps": steps, "rows": rows, "epochs": 1.0, "per_device_train_batch_size": batch,
            "gradient_accumulation_steps": 1, "world_size": 1, "rows_per_step": batch,
            "tokens": {"all": all_tokens, "completion": completion}}


def write_citing_run(run: Path, model_dir: Path, rows: list[dict], rounds: list[tuple[list[str], int]]) -> Path:
    """A finished CITING run folder as the pipeline leaves it, written by hand: a fresh LoRA adapter as sft/ and
    final/, the curriculum rows, and per round (ids trained on, optimizer steps) at 2 rows per step."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from citing_trl.models import load_student_tokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    for folder in ("sft", "final"):
        peft.save_pretrained(run / folder)
        load_student_tokenizer(str(model_dir)).save_pretrained(run / folder)
    write_jsonl(run / "instructions.jsonl", rows)
    by_id = {r["id"]: r for r in rows}
    for k, (ids, steps) in enumerate(rounds):
        rdir = run / f"round_{k}"
        rdir.mkdir()
        write_jsonl(rdir / "revisions.jsonl", [{"id": i, "instruction": by_id[i]["instruction"], "input": "",
                                                "criteria": "- be precise", "response": "draft", "revision": "better",
                                                "round": k} for i in ids])
        (rdir / "train_stats.json").write_text(json.dumps(round_stats(steps, len(ids), all_tokens=100 + k,
                                                                      completion=40 + k)))
        (rdir / "summary.json").write_text(json.dumps({"round": k, "trained_rows": len(ids)}))
    return run


@pytest.fixture(scope="module")
def fake_run(tiny_model_dir, tmp_path_factory) -> Path:
    """Round 0 took 3 optimizer steps on four rows (one of them without a gold answer), round 1 took 1 step on one
    of round 0's rows (trained twice, as in CITING); q4 was never trained on."""
    rows = [{"id": f"q{i}", "instruction": f"Describe item {i}.", "input": "", "output": f"Item {i} is small and blue.",
             "criteria": "- be precise"} for i in range(5)]
    rows[3]["output"] = ""  # a row without gold: skipped and counted
    return write_citing_run(tmp_path_factory.mktemp("citing_run"), tiny_model_dir, rows,
                            [(["q0", "q1", "q2", "q3"], 3), (["q0"], 1)])


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
    assert stats["rows"]["distinct_instructions"] == 3
    by_id = {r["id"]: r for r in read_jsonl(fake_run / "instructions.jsonl")}
    trained = [by_id[i] for i in ("q0", "q1", "q2", "q0")]  # each seen twice: 2 epochs
    assert stats["tokens"]["sft_more"] == expected_tokens(tiny_model_dir, trained, times=2)
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
    assert [r["id"] for r in rows] == ["q0", "q1", "q2", "q0"] and [r["round"] for r in rows] == [0, 0, 0, 1]
    assert rows[0]["output"] == "Item 0 is small and blue."
    # the gold looked up by text when ids differ (another loader), and nothing left is an error
    renamed = [{**r, "id": "x" + r["id"]} for r in read_jsonl(fake_run / "instructions.jsonl")]
    assert len(gold_rows(record, renamed)[0]) == 4
    with pytest.raises(DataError, match="none of the 5 rows"):
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


def test_a_folder_that_is_no_citing_run_is_refused(tmp_path):
    (tmp_path / "sft").mkdir()
    with pytest.raises(CitingRunError, match="no round_<k>/ folder, so not a CITING run folder"):
        read_citing_run(tmp_path)
    with pytest.raises(CitingRunError, match="needs --citing_run"):
        read_citing_run(None)


@pytest.mark.slow
def test_bad_citing_run_is_one_line_from_the_launcher(tmp_path):
    bad = tmp_path / "nowhere"
    proc = subprocess.run([sys.executable, str(REPO / "baselines" / "sft_more.py"), "--config",
                           str(REPO / "baselines" / "configs" / "sft_more_demo.yaml"), "--citing_run", str(bad),
                           "--output_dir", str(tmp_path / "out")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        f"error: --citing_run {bad}: no such folder"]
    assert "Traceback" not in proc.stderr


def gold_loss(model_dir, adapter, rows) -> float:
    """Mean NLL of the gold answers' tokens given the instruction prompt, under base + adapter."""
    from citing_trl.models import load_model
    from citing_trl.prompts import instruction_messages

    model, tok = load_model(str(model_dir), adapter=str(adapter))
    total, count = 0.0, 0
    for r in rows:
        prompt = tok.apply_chat_template(instruction_messages(r["instruction"], r.get("input") or ""), tokenize=False,
                                         add_generation_prompt=True)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tok(r["output"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([p_ids + c_ids]), labels=torch.tensor([[-100] * len(p_ids) + c_ids])).loss
        total, count = total + loss.item() * len(c_ids), count + len(c_ids)
    return total / count


@pytest.mark.slow
def test_smollm2_sft_more(smollm2_dir, tmp_path):
    """Real parts: SmolLM2-135M-Instruct continues from an SFT adapter on four demo rows' gold answers, as many steps
    as the run's rounds took (2 + 1 at 2 rows per step: 1.5 epochs), and those answers become more likely. (A real
    SmolLM2 CITING run to read them from costs minutes on 2 cores; the pipeline's train_stats.json is tested on the
    tiny model in tests/test_pipeline.py.)"""
    from citing_trl.data import load_instructions

    rows = [{**r, "criteria": "- be precise"} for r in load_instructions("demo").to_list()[:4]]
    run = write_citing_run(tmp_path / "run", smollm2_dir, rows, [([r["id"] for r in rows], 2), ([rows[0]["id"]], 1)])
    out = tmp_path / "sft_more"
    run_sft_more(SFTMoreConfig(output_dir=str(out), **TRAIN), model_config(smollm2_dir), run)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["optimizer_steps"] == stats["citing_optimizer_steps"] == 3
    assert stats["rows"]["gold_rows"] == 5 and stats["rows"]["skipped_no_gold"] == 0
    gold = gold_rows(read_citing_run(run), rows)[0]
    assert 0 < stats["tokens"]["sft_more"]["completion"] < stats["tokens"]["sft_more"]["all"]
    assert gold_loss(smollm2_dir, out, gold) < gold_loss(smollm2_dir, run / "sft", gold)
