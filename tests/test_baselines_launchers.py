"""Each baseline launcher runs a tiny end to end from its demo YAML (the tiny model stands in for SmolLM2 through
CLI overrides): reward model -> RRHF and RAFT with it -> DPO from the SFT adapter, one step each. Bad flags and
rows end with one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["--max_steps", "1", "--per_device_train_batch_size", "2", "--logging_steps", "1", "--disable_tqdm", "true",
         "--lora_r", "4", "--lora_alpha", "8", "--dataloader_num_workers", "0"]


def launch(script: str, config: str, *overrides: str, check: bool = True, accelerate: bool = True):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    launcher = ["-m", "accelerate.commands.launch", "--num_processes", "1"] if accelerate else []
    proc = subprocess.run(
        [sys.executable, *launcher, str(REPO / "baselines" / script),
         "--config", str(REPO / "baselines" / "configs" / config), *overrides],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def citing_like_run(tiny_model_dir, tmp_path_factory):
    """What a CITING run leaves for the baselines: an SFT adapter under sft/ and round_<k>/ revision files."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path_factory.mktemp("citing_run")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    peft.save_pretrained(run / "sft")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(run / "sft")
    rows = [{"id": f"q{i}", "instruction": f"Describe item {i}.", "input": "", "output": f"Item {i} is small and blue."}
            for i in range(6)]
    (run / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for k in (0, 1):
        (run / f"round_{k}").mkdir()
        (run / f"round_{k}" / "revisions.jsonl").write_text("".join(json.dumps({
            "id": r["id"], "instruction": r["instruction"], "input": "", "criteria": "- be precise",
            "response": f"item {k}", "revision": f"Item {r['id']} is described precisely, round {k}."}) + "\n" for r in rows))
    return run


@pytest.mark.slow
def test_launchers_end_to_end(tiny_model_dir, citing_like_run, tmp_path):
    run, model = citing_like_run, ["--model_name_or_path", str(tiny_model_dir)]
    rm = tmp_path / "rm"
    launch("reward_model.py", "reward_model_demo.yaml", *model, *TRAIN, "--preferences", str(run),
           "--output_dir", str(rm), "--eval_fraction", "0.34")
    metrics = json.loads((rm / "eval_metrics.json").read_text())
    assert metrics["train_pairs"] == 8 and metrics["held_out_pairs"] == 4 and 0 <= metrics["held_out_accuracy"] <= 1
    assert (rm / "adapter_config.json").is_file() and (rm / "reward_model.json").is_file()

    common = [*model, *TRAIN, "--dataset", str(run / "data.jsonl"), "--sft_adapter", str(run / "sft"),
              "--reward_model", str(rm), "--sample_max_new_tokens", "8"]
    launch("rrhf.py", "rrhf_demo.yaml", *common, "--citing_run", str(run), "--output_dir", str(tmp_path / "rrhf"))
    cands = [json.loads(x) for x in (tmp_path / "rrhf" / "candidates.jsonl").read_text().splitlines()]
    assert len(cands) == 6 and all(len(c["candidates"]) == len(c["scores"]) for c in cands)
    for c in cands:  # samples (non-empty ones), then the ground truth, then both rounds' teacher revisions
        n = c["id"][-1]
        assert c["candidates"][-3:] == [f"Item {n} is small and blue.", f"Item q{n} is described precisely, round 0.",
                                        f"Item q{n} is described precisely, round 1."]
    assert (tmp_path / "rrhf" / "adapter_model.safetensors").is_file()

    launch("raft.py", "raft_demo.yaml", *common, "--num_stages", "1", "--num_samples", "2",
           "--output_dir", str(tmp_path / "raft"))
    stats = json.loads((tmp_path / "raft" / "stage_0" / "stats.json").read_text())
    assert stats["prompts"] == 6 and stats["samples"] == 12 and stats["kept"] <= 6
    assert (tmp_path / "raft" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_dpo_launches_from_yaml_and_steps(tiny_model_dir, citing_like_run, tmp_path):
    run = citing_like_run
    launch("dpo.py", "dpo_demo.yaml", "--model_name_or_path", str(tiny_model_dir), *TRAIN,
           "--sft_adapter", str(run / "sft"), "--citing_run", str(run), "--output_dir", str(tmp_path / "dpo"))
    from safetensors.torch import load_file

    before = load_file(run / "sft" / "adapter_model.safetensors")
    after = load_file(tmp_path / "dpo" / "adapter_model.safetensors")
    assert set(before) == set(after)  # the SFT adapter itself was trained (same LoRA modules), not a fresh one
    assert any(not (before[k] == after[k]).all() for k in before)  # one optimisation step changed it


@pytest.mark.slow
def test_launcher_bad_input_is_one_line(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x1", "prompt": "hi", "chosen": "a"}) + "\n")
    proc = launch("reward_model.py", "reward_model_demo.yaml", "--model_name_or_path", str(tiny_model_dir),
                  "--preferences", str(bad), "--output_dir", str(tmp_path / "rm"), check=False, accelerate=False)
    assert proc.returncode != 0
    assert "row 1 (id x1): missing rejected" in proc.stderr and "Traceback" not in proc.stderr


PARSERS = {
    "reward_model": "citing_trl.baselines.preferences:PreferenceArguments citing_trl.baselines.reward_model:RewardModelConfig",
    "dpo": "citing_trl.baselines.preferences:PreferenceArguments citing_trl.baselines.common:BaselineArguments "
           "citing_trl.baselines.dpo:DPOConfig",
    "rrhf": "citing_trl.sft:DataArguments citing_trl.baselines.common:BaselineArguments citing_trl.baselines.rrhf:RRHFConfig "
            "citing_trl.baselines.common:SamplingArguments",
    "raft": "citing_trl.sft:DataArguments citing_trl.baselines.common:BaselineArguments citing_trl.baselines.raft:RAFTConfig "
            "citing_trl.baselines.common:SamplingArguments",
}


@pytest.mark.parametrize("name", sorted(PARSERS))
@pytest.mark.parametrize("setting", ["demo", "llama7b"])
def test_baseline_yamls_parse(name, setting, tmp_path):
    """Every baseline YAML (CPU demo and 8-GPU paper setting) parses with its launcher's dataclasses."""
    import importlib

    from trl import ModelConfig, TrlParser

    classes = [getattr(importlib.import_module(m), c) for m, c in (s.split(":") for s in PARSERS[name].split())]
    path = REPO / "baselines" / "configs" / f"{name}_{setting}.yaml"
    extra = ["--use_cpu", "true", "--bf16", "false"] if setting == "llama7b" else []  # no GPU here
    parsed = TrlParser((*classes, ModelConfig)).parse_args_and_config(
        args=["--config", str(path), "--output_dir", str(tmp_path), *extra])
    model = parsed[-1]
    assert model.model_name_or_path and model.lora_r == 16
    if name in ("rrhf", "raft", "dpo"):
        assert parsed[1].sft_adapter.endswith("/sft")  # every method starts from SFT


LAUNCHERS = sorted(p.name for p in (REPO / "baselines").glob("*.py"))


@pytest.mark.parametrize("argv", [[name, "--help"] for name in LAUNCHERS] + [["ppo_rlhf.py", "--method", "rloo", "--help"]],
                         ids=lambda argv: " ".join(argv))
def test_every_launcher_help_exits_0(argv, monkeypatch, capsys):
    """`python baselines/<launcher>.py --help` prints the usage and exits 0 (in-process: no interpreter start)."""
    import importlib.util

    assert {"compare.py", "dpo.py", "ppo_rlhf.py", "raft.py", "reward_model.py", "rrhf.py"} <= set(LAUNCHERS)
    name = f"launcher_{argv[0][:-3]}"
    spec = importlib.util.spec_from_file_location(name, REPO / "baselines" / argv[0])
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as stop:
        module.main()
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")


def test_compare_yamls_parse():
    import importlib.util

    from trl import TrlParser

    spec = importlib.util.spec_from_file_location("compare", REPO / "baselines" / "compare.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["compare"] = mod
    spec.loader.exec_module(mod)
    for setting in ("demo", "qa", "llama7b"):
        (a,) = TrlParser((mod.CompareArguments,)).parse_args_and_config(
            args=["--config", str(REPO / "baselines" / "configs" / f"compare_{setting}.yaml")])
        cmds = mod.stage_commands(a)
        for stage in ("citing", "ppo", "rrhf", "raft", "dpo"):
            config = Path(REPO / cmds[stage][cmds[stage].index("--config") + 1])
            assert config.is_file(), config
