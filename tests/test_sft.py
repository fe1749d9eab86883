"""SFT stage (Alg. 1 lines 2-4) and the accelerate configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

CONFIGS = sorted((REPO / "accelerate_configs").glob("*.yaml"))


def write_rows(path: Path, n: int = 12) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"instruction": f"Name a colour, number {i}.", "input": "", "output": f"Blue {i}."}) + "\n")
    return path


def sft_yaml(tmp_path: Path, model_dir: Path, data: Path, **extra) -> Path:
    cfg = {
        "model_name_or_path": str(model_dir), "use_peft": True, "lora_r": 4, "lora_alpha": 8,
        "lora_target_modules": ["q_proj", "v_proj"], "dataset": str(data), "output_dir": str(tmp_path / "out"),
        "max_length": 128, "per_device_train_batch_size": 2, "max_steps": 3, "logging_steps": 1,
        "save_strategy": "no", "report_to": "none", "gradient_checkpointing": False, "use_cpu": True,
        "bf16": False, "learning_rate": 1e-3, "log_level": "info", **extra,
    }
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    raw = yaml.safe_load(path.read_text())
    assert str(cfg.distributed_type).split(".")[-1] == raw["distributed_type"]
    assert cfg.num_processes == raw["num_processes"]
    if raw["distributed_type"] == "DEEPSPEED":
        assert cfg.deepspeed_config["zero_stage"] in (2, 3)


def test_expected_configs_exist():
    names = {p.stem for p in CONFIGS}
    assert {"single_gpu", "multi_gpu", "zero2", "zero3", "fsdp", "cpu_2proc"} <= names
    assert yaml.safe_load((REPO / "accelerate_configs/multi_gpu.yaml").read_text())["num_processes"] == 8


def test_sft_rows_are_prompt_completion():
    from datasets import Dataset

    from citing_trl.sft import to_prompt_completion

    rows = to_prompt_completion(Dataset.from_list([{"instruction": "Add 2 and 2.", "input": "Be brief.", "output": "4"}]))
    assert rows[0]["prompt"] == [{"role": "user", "content": "Add 2 and 2.\n\nBe brief."}]
    assert rows[0]["completion"] == [{"role": "assistant", "content": "4"}]


@pytest.mark.slow
def test_sft_recipe_two_processes(tmp_path, tiny_model_dir):
    """accelerate launch with the 2-process CPU config runs two gloo ranks and saves one adapter."""
    data = write_rows(tmp_path / "rows.jsonl")
    cfg = sft_yaml(tmp_path, tiny_model_dir, data)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "accelerate_configs/cpu_2proc.yaml"),
         "--main_process_port", "0", str(REPO / "recipes/sft.py"), "--config", str(cfg)],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    # 2 ranks x batch 2: the trainer reports the global batch; one process would say 2
    assert "Total train batch size (w. parallel, distributed & accumulation) = 4" in log, log[-4000:]
    out = tmp_path / "out"
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert not list(out.glob("**/adapter_model.safetensors"))[1:], "exactly one adapter is saved"


def test_sft_adapter_loads_and_generates(tmp_path, tiny_model_dir):
    """In-process SFT with the library entry point; the saved adapter loads back and generates."""
    from trl import ModelConfig

    from citing_trl.citing_trainer import CitingConfig
    from citing_trl.generation import DecodingConfig, generate
    from citing_trl.models import load_model
    from citing_trl.sft import DataArguments, run_sft

    data = write_rows(tmp_path / "rows.jsonl")
    args = CitingConfig(output_dir=str(tmp_path / "sft"), use_cpu=True, bf16=False, report_to="none", max_steps=2,
                        per_device_train_batch_size=2, save_strategy="no", gradient_checkpointing=False)
    model_args = ModelConfig(model_name_or_path=str(tiny_model_dir), use_peft=True, lora_r=4, lora_alpha=8,
                             lora_target_modules=["q_proj", "v_proj"])
    run_sft(DataArguments(dataset=str(data), merge_adapter=True), args, model_args)
    model, tok = load_model(str(tiny_model_dir), adapter=str(tmp_path / "sft"))
    out = generate(model, tok, [[{"role": "user", "content": "Name a colour."}]], DecodingConfig(max_new_tokens=5, show_progress=False))
    assert out[0].completion_tokens > 0
    assert (tmp_path / "sft" / "merged" / "config.json").exists()


def test_lora_config_is_trls_with_the_suites_defaults():
    """TRL's get_peft_config builds it; LoRA stays on without --use_peft and adapts q/k/v/o by default."""
    from peft import LoraConfig
    from trl import ModelConfig, get_peft_config

    from citing_trl.sft import lora_config

    plain = lora_config(ModelConfig(lora_r=8, lora_alpha=16))
    assert isinstance(plain, LoraConfig) and (plain.r, plain.lora_alpha, plain.task_type) == (8, 16, "CAUSAL_LM")
    assert set(plain.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    given = ModelConfig(use_peft=True, lora_r=4, lora_target_modules=["q_proj", "v_proj"], use_rslora=True)
    assert lora_config(given).to_dict() == get_peft_config(given).to_dict()
    reward = lora_config(given, lora_task_type="SEQ_CLS", lora_modules_to_save=["score"])
    assert reward.task_type == "SEQ_CLS" and reward.modules_to_save == ["score"] and reward.use_rslora


def test_one_dtype_resolver():
    import torch

    from citing_trl.errors import ConfigError
    from citing_trl.models import resolve_dtype

    assert resolve_dtype(None) == resolve_dtype("auto") == "auto"
    assert resolve_dtype("bfloat16") is torch.bfloat16 and resolve_dtype("float32") is torch.float32
    assert resolve_dtype(torch.float16) is torch.float16
    assert resolve_dtype("half") is torch.float16  # torch's own aliases are names of a dtype too
    for bad in ("bf16", "tensor", 16):  # torch.tensor is a function, not a dtype
        with pytest.raises(ConfigError, match="--dtype must be one of auto, float32, bfloat16, float16"):
            resolve_dtype(bad)
