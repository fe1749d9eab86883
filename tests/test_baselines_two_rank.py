"""The baselines under two data-parallel ranks (``accelerate_configs/cpu_2proc.yaml``: two gloo CPU ranks standing
in for two GPUs), on the tiny random model: the reward model, RRHF, RAFT, DPO and RLOO (with a resume from its
checkpoint) each train once, save ONE adapter in one output folder, end with identical LoRA weights on both ranks
(``rank_digests.json``, every rank's hash of its trainable weights), and RRHF and RAFT split their sampling into
disjoint slices that cover every prompt. Also: the launcher setting ``baselines/compare.py`` passes to its stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from citing_trl.baselines.ranks import DIGEST_FILE, part_path, shard
from tests.conftest import REPO
from tests.test_baselines_compare import compare_module

TWO_RANKS = str(REPO / "accelerate_configs" / "cpu_2proc.yaml")
TRAIN = ["--max_steps", "1", "--per_device_train_batch_size", "2", "--logging_steps", "1", "--disable_tqdm", "true",
         "--lora_r", "4", "--lora_alpha", "8", "--dataloader_num_workers", "0"]
IDS = [f"q{i}" for i in range(6)]


def launch_two_ranks(script: str, config: str, *flags: str) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file cpu_2proc.yaml baselines/<script> --config baselines/configs/<config>``."""
    # in-process tests earlier in the session leave ACCELERATE_* / rank variables behind (see test_distributed.py)
    leaked = ("ACCELERATE_", "MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(leaked)}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", TWO_RANKS, "--main_process_port", "0",
         str(REPO / "baselines" / script), "--config", str(REPO / "baselines" / "configs" / config), *flags],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc


def assert_same_weights_on_both_ranks(folder: Path) -> None:
    digests = json.loads((folder / DIGEST_FILE).read_text())
    assert len(digests["weights_digest_per_rank"]) == 2, digests
    assert digests["weights_digest_per_rank"][0] == digests["weights_digest_per_rank"][1], digests
    assert digests["identical"] is True


def assert_one_adapter(folder: Path, *others: str) -> None:
    """The adapter is saved once, in ``folder``; the only other adapters below it are the method's own ``others``
    (RAFT's stage adapters, RLOO's checkpoints): no copy per rank."""
    assert (folder / "adapter_config.json").is_file()
    found = sorted(str(p.parent.relative_to(folder)) for p in folder.rglob("adapter_model.safetensors"))
    assert found == sorted([".", *others]), found


def assert_disjoint_and_complete(part0: Path, part1: Path, joined: Path) -> None:
    ids = [[json.loads(line)["id"] for line in p.read_text().splitlines()] for p in (part0, part1, joined)]
    assert ids[0] and ids[1], "each rank sampled a slice"
    assert not set(ids[0]) & set(ids[1]), "the two ranks' slices overlap"
    assert ids[0] + ids[1] == ids[2] == [f"data-{i}" for i in IDS], "joined in row order, every row once"


@pytest.fixture(scope="module")
def citing_run(tiny_model_dir, tmp_path_factory) -> Path:
    """An SFT adapter (sft/), six training rows with answers and two rounds of teacher revisions."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path_factory.mktemp("citing_run")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    peft.save_pretrained(run / "sft")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(run / "sft")
    rows = [{"id": i, "instruction": f"Describe item {i}.", "input": "", "output": f"Item {i} is small and blue."}
            for i in IDS]
    (run / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for k in (0, 1):
        (run / f"round_{k}").mkdir()
        (run / f"round_{k}" / "revisions.jsonl").write_text("".join(json.dumps({
            "id": r["id"], "instruction": r["instruction"], "input": "", "criteria": "- be precise",
            "response": f"item {k}", "revision": f"Item {r['id']} is described precisely, round {k}."}) + "\n"
            for r in rows))
    return run


@pytest.fixture(scope="module")
def reward_model_two_ranks(tiny_model_dir, citing_run, tmp_path_factory):
    """baselines/reward_model.py under two ranks; (output folder, the launch's stdout)."""
    out = tmp_path_factory.mktemp("rm") / "rm"
    proc = launch_two_ranks("reward_model.py", "reward_model_demo.yaml", "--model_name_or_path", str(tiny_model_dir),
                            *TRAIN, "--preferences", str(citing_run), "--output_dir", str(out), "--eval_fraction", "0.34")
    return out, proc.stdout


def sampling_flags(tiny_model_dir, citing_run, reward_model):
    return ["--model_name_or_path", str(tiny_model_dir), *TRAIN, "--dataset", str(citing_run / "data.jsonl"),
            "--sft_adapter", str(citing_run / "sft"), "--reward_model", str(reward_model), "--sample_max_new_tokens", "8"]


# ---------------------------------------------------------------------------------------------------------
# Fast: the slices, and the launcher setting of baselines/compare.py
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,world", [(6, 2), (7, 2), (7, 3), (1, 2), (0, 2), (5, 1)])
def test_rank_slices_are_disjoint_contiguous_and_complete(n, world):
    items = list(range(n))
    parts = [shard(items, SimpleNamespace(num_processes=world, process_index=r)) for r in range(world)]
    assert [x for _, part in parts for x in part] == items  # rank order is input order, every item once
    assert [start for start, _ in parts] == [sum(len(p) for _, p in parts[:r]) for r in range(world)]
    sizes = [len(p) for _, p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_part_path_is_per_rank_only_with_several_ranks(tmp_path):
    path = tmp_path / "samples.jsonl"
    assert part_path(path, SimpleNamespace(num_processes=1, process_index=0)) == path
    assert part_path(path, SimpleNamespace(num_processes=2, process_index=1)) == tmp_path / "samples.rank1.jsonl"


TRAINING = ("citing", "reward_model", "ppo", "rrhf", "raft", "dpo")


def test_compare_launches_every_training_and_answering_stage_with_the_setting(tmp_path):
    cmp = compare_module()
    cmds = cmp.stage_commands(cmp.CompareArguments(output_dir=str(tmp_path), num_processes=2,
                                                   accelerate_config="accelerate_configs/cpu_2proc.yaml"))
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/cpu_2proc.yaml",
              "--num_processes", "2"]
    one_process = ("ppo_merge", "evaluate")  # a merge and the scoring
    assert set(TRAINING) <= set(cmds) and {f"answers_{m}" for m in ("sft", "citing", "ppo", "rrhf", "raft", "dpo")} <= set(cmds)
    for name, cmd in cmds.items():  # every other stage trains or answers, whatever stages compare.py has
        if name in one_process:
            assert cmd[0] == sys.executable and "accelerate.commands.launch" not in cmd, name
            continue
        assert cmd[: len(launch)] == launch, name
        script = cmd[len(launch)]
        assert script.endswith(".py") and (REPO / script).is_file(), name
        assert script == "recipes/infer.py" if name.startswith("answers_") else script != "recipes/infer.py", name


def test_compare_launcher_defaults_and_forms(tmp_path):
    cmp = compare_module()
    plain = cmp.stage_commands(cmp.CompareArguments(output_dir=str(tmp_path), launcher="python"))  # older YAMLs
    for name in (*TRAINING, "answers_sft"):
        assert plain[name][0] == sys.executable and plain[name][1].endswith(".py")  # one plain python process
    only_n = cmp.launch_prefix(cmp.CompareArguments(num_processes=4))
    assert only_n == [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "4"]
    one = cmp.launch_prefix(cmp.CompareArguments(num_processes=1))
    assert one == [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1"]
    config = str(REPO / "accelerate_configs" / "multi_gpu.yaml")
    assert cmp.launch_prefix(cmp.CompareArguments(accelerate_config=config)) == [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", config]  # the file's num_processes


def test_compare_launcher_setting_from_the_paper_yaml():
    from trl import TrlParser

    cmp = compare_module()
    (a,) = TrlParser((cmp.CompareArguments,)).parse_args_and_config(
        args=["--config", str(REPO / "baselines" / "configs" / "compare_llama7b.yaml")])
    assert (a.accelerate_config, a.num_processes) == ("accelerate_configs/multi_gpu.yaml", 8)
    assert cmp.stage_commands(a)["raft"][3:7] == ["--config_file", "accelerate_configs/multi_gpu.yaml",
                                                   "--num_processes", "8"]


@pytest.mark.parametrize("setting,needle", [
    ({"num_processes": 0}, "--num_processes must be at least 1"),
    ({"accelerate_config": "accelerate_configs/no_such.yaml"}, "--accelerate_config must be an existing"),
    ({"launcher": "accelerate launch --config_file accelerate_configs/multi_gpu.yaml"},
     "--launcher is replaced by --accelerate_config FILE and --num_processes N"),
])
def test_compare_bad_launcher_setting_is_one_clear_error(setting, needle, tmp_path):
    from citing_trl.errors import ConfigError

    cmp = compare_module()
    with pytest.raises(ConfigError, match=needle):
        cmp.stage_commands(cmp.CompareArguments(output_dir=str(tmp_path), **setting))


# ---------------------------------------------------------------------------------------------------------
# Slow: every launcher under two gloo ranks
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_reward_model_two_ranks(reward_model_two_ranks):
    out, stdout = reward_model_two_ranks
    assert_one_adapter(out)
    assert_same_weights_on_both_ranks(out)
    metrics = json.loads((out / "eval_metrics.json").read_text())  # the main process scores the held-out pairs
    assert metrics["train_pairs"] == 8 and metrics["held_out_pairs"] == 4 and 0 <= metrics["held_out_accuracy"] <= 1
    assert stdout.count("reward model saved to") == 1  # one report, from the main process


@pytest.mark.slow
def test_rrhf_two_ranks_shard_the_candidates(tiny_model_dir, citing_run, reward_model_two_ranks, tmp_path):
    out = tmp_path / "rrhf"
    proc = launch_two_ranks("rrhf.py", "rrhf_demo.yaml", *sampling_flags(tiny_model_dir, citing_run,
                            reward_model_two_ranks[0]), "--num_samples", "2", "--citing_run", str(citing_run),
                            "--output_dir", str(out))
    assert_disjoint_and_complete(out / "candidates.rank0.jsonl", out / "candidates.rank1.jsonl", out / "candidates.jsonl")
    parts = [json.loads((out / f"candidates.rank{r}.stats.json").read_text()) for r in (0, 1)]
    assert json.loads((out / "candidates.stats.json").read_text())["prompts"] == sum(p["prompts"] for p in parts) == 6
    for c in map(json.loads, (out / "candidates.jsonl").read_text().splitlines()):
        assert c["candidates"][-3:][0] == f"Item {c['id'][-2:]} is small and blue."  # gold, then two revisions
        assert len(c["candidates"]) == len(c["scores"])
    assert_one_adapter(out)
    assert_same_weights_on_both_ranks(out)
    assert proc.stdout.count("RRHF adapter saved") == 1


@pytest.mark.slow
def test_raft_two_ranks_shard_the_sampling(tiny_model_dir, citing_run, reward_model_two_ranks, tmp_path):
    out = tmp_path / "raft"
    proc = launch_two_ranks("raft.py", "raft_demo.yaml", *sampling_flags(tiny_model_dir, citing_run,
                            reward_model_two_ranks[0]), "--num_stages", "2", "--num_samples", "2",
                            "--output_dir", str(out))
    for t in (0, 1):
        sdir = out / f"stage_{t}"
        assert_disjoint_and_complete(sdir / "samples.rank0.jsonl", sdir / "samples.rank1.jsonl", sdir / "samples.jsonl")
        samples = [json.loads(line) for line in (sdir / "samples.jsonl").read_text().splitlines()]
        assert all(len(s["answers"]) == len(s["rewards"]) == 2 for s in samples)
        assert json.loads((sdir / "stats.json").read_text())["samples"] == 12
        assert (sdir / "done").is_file()
        assert_same_weights_on_both_ranks(sdir / "adapter")
    stages = [json.loads(line)["stage"] for line in (out / "stages.jsonl").read_text().splitlines()]
    assert stages == [0, 1]  # written once, by the main process
    assert_one_adapter(out, "stage_0/adapter", "stage_1/adapter")
    assert_same_weights_on_both_ranks(out)  # the final adapter is stage 1's
    assert proc.stdout.count("RAFT adapter saved") == 1


@pytest.mark.slow
def test_dpo_two_ranks(tiny_model_dir, citing_run, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "dpo"
    launch_two_ranks("dpo.py", "dpo_demo.yaml", "--model_name_or_path", str(tiny_model_dir), *TRAIN,
                     "--sft_adapter", str(citing_run / "sft"), "--citing_run", str(citing_run), "--output_dir", str(out))
    assert_one_adapter(out, "ref")  # TRL saves the frozen reference copy of the SFT adapter beside the policy
    assert_same_weights_on_both_ranks(out)
    before = load_file(citing_run / "sft" / "adapter_model.safetensors")
    after = load_file(out / "adapter_model.safetensors")
    assert set(before) == set(after) and any(not (before[k] == after[k]).all() for k in before)


@pytest.mark.slow
def test_rloo_two_ranks_resume_from_checkpoint(tiny_model_dir, citing_run, reward_model_two_ranks, tmp_path):
    """Two ranks, one step and a checkpoint; the same command with --max_steps 2 continues from checkpoint-1 (step 1
    is not trained again) and ends with identical weights on both ranks."""
    out = tmp_path / "rloo"
    flags = ["--model_name_or_path", str(tiny_model_dir), "--sft_adapter", str(citing_run / "sft"),
             "--reward_model_path", str(reward_model_two_ranks[0]), "--dataset", str(citing_run / "data.jsonl"),
             "--lora_r", "4", "--lora_alpha", "8", "--save_steps", "1", "--max_completion_length", "8",
             "--per_device_train_batch_size", "4", "--disable_tqdm", "true", "--output_dir", str(out)]
    launch_two_ranks("ppo_rlhf.py", "rloo_demo.yaml", *flags, "--max_steps", "1")
    first = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    assert first["global_step"] == 1
    assert_same_weights_on_both_ranks(out)
    proc = launch_two_ranks("ppo_rlhf.py", "rloo_demo.yaml", *flags, "--max_steps", "2")
    second = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert second["global_step"] == 2
    # resumed: step 1's log entry (with its measured step time) is the first run's, and this run logged one step
    assert second["log_history"][0] == first["log_history"][0]
    assert proc.stdout.count("'loss'") == 1, proc.stdout[-2000:]
    assert_one_adapter(out, "base_adapter", "checkpoint-1", "checkpoint-2")
    assert_same_weights_on_both_ranks(out)
