"""RAFT keeps exactly the argmax candidate per prompt; stages log the kept set's mean reward, save adapters,
and a rerun skips finished stages."""

from __future__ import annotations

import json

import pytest

from citing_trl.baselines.common import SamplingArguments
from citing_trl.baselines.raft import RAFTConfig, RAFTTrainer, select


def test_select_keeps_argmax_per_prompt():
    samples = [["a", "b", "c"], ["d", "e"], ["f", "g", "h", "i"], []]
    rewards = [[0.1, 0.7, 0.3], [-2.0, -3.0], [1.0, 5.0, 5.0, 0.0], []]
    assert select(samples, rewards) == [[1], [0], [1], []]  # first of the best on ties
    assert select(samples, rewards, keep_fraction=0.5) == [[1, 2], [0], [1, 2], []]
    assert select(samples, rewards, keep_fraction=0.01) == [[1], [0], [1], []]


class LengthScorer:
    """Rule-based reward: number of characters (a stand-in for a reward model)."""

    def __init__(self):
        self.calls = 0

    def score(self, prompts, completions):
        self.calls += 1
        return [float(len(c)) for c in completions]


def test_raft_stages_keep_best_and_resume(tiny_model_dir, tmp_path):
    from trl import ModelConfig

    rows = [{"id": f"r{i}", "instruction": f"Describe thing {i}.", "input": ""} for i in range(4)]
    args = RAFTConfig(output_dir=str(tmp_path / "raft"), num_stages=2, num_samples=3,
                      per_device_train_batch_size=2, num_train_epochs=1, learning_rate=1e-3, use_cpu=True, bf16=False,
                      save_strategy="no", logging_steps=1, max_length=128, disable_tqdm=True)
    margs = ModelConfig(model_name_or_path=str(tiny_model_dir), lora_r=4, lora_alpha=8, dtype="float32")
    scorer = LengthScorer()
    sampling = SamplingArguments(sample_max_new_tokens=12).build()
    out = RAFTTrainer(args, margs, rows, scorer, sampling=sampling).train()
    assert (out / "adapter_config.json").is_file()
    for t in range(2):
        sdir = out / f"stage_{t}"
        samples = [json.loads(line) for line in (sdir / "samples.jsonl").read_text().splitlines()]
        kept = [json.loads(line) for line in (sdir / "kept.jsonl").read_text().splitlines()]
        assert [len(s["answers"]) for s in samples] == [3] * 4
        by_id = {k["id"]: k for k in kept}
        for s in samples:
            best = max(range(3), key=lambda j: (s["rewards"][j], -j))
            if s["answers"][best].strip():
                assert by_id[s["id"]]["output"] == s["answers"][best]
                assert by_id[s["id"]]["reward"] == max(s["rewards"])
        stats = json.loads((sdir / "stats.json").read_text())
        assert stats["mean_reward_kept"] == pytest.approx(sum(k["reward"] for k in kept) / len(kept))
        assert stats["mean_reward_kept"] >= stats["mean_reward_all"]
    assert json.loads((out / "stage_1" / "stats.json").read_text())["start_adapter"] == str(out / "stage_0" / "adapter")
    calls = scorer.calls
    RAFTTrainer(args, margs, rows, scorer, sampling=sampling).train()  # rerun: both stages done, nothing sampled or scored again
    assert scorer.calls == calls
    assert len((out / "stages.jsonl").read_text().splitlines()) == 2


# ------------------------------------------------------------------------------------------------ reward: gold

GOLD_ROWS = [
    {"id": "b1", "source": "boolq", "instruction": "Is the sky blue?", "input": "Passage: it is.", "output": "yes",
     "answers": ["yes"]},
    {"id": "b2", "source": "boolq", "instruction": "Is grass red?", "input": "Passage: green.", "output": "no",
     "answers": ["no"]},
    {"id": "b3", "source": "boolq", "instruction": "Is fire cold?", "input": "Passage: hot.", "output": "no",
     "answers": ["no"]},
]
# What the (faked) policy samples per stage: b1 has one right answer among wrong ones, b2 none, b3 only right ones.
STAGE_SAMPLES = {
    0: {"b1": ["No, it is not.", "Yes, it is.", "yes"], "b2": ["Yes.", "yes", "Yes, red."], "b3": ["No.", "no", "No way."]},
    1: {"b1": ["No."] * 3, "b2": ["Yes."] * 3, "b3": ["Yes."] * 3},
}


def fake_sampler(stage_of_seed):
    from citing_trl.generation import Generation
    from citing_trl.prompts import instruction_messages

    by_prompt = {json.dumps(instruction_messages(r["instruction"], r["input"])): r["id"] for r in GOLD_ROWS}

    def sample(model, tokenizer, prompts, num_samples, gen, desc):
        assert gen.do_sample
        texts = STAGE_SAMPLES[stage_of_seed(gen.seed)]
        return [[Generation(t, 1, 1, "stop") for t in texts[by_prompt[json.dumps(p)]][:num_samples]] for p in prompts]

    return sample


def test_select_with_min_reward_is_rejection_sampling():
    samples = [["a", "b", "c"], ["d", "e"], ["f", "g"]]
    rewards = [[0.0, 1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]
    assert select(samples, rewards) == [[1], [0], [0]]  # RAFT alone keeps the "best" wrong answer "d"
    assert select(samples, rewards, min_reward=1.0) == [[1], [], [0]]
    assert select(samples, rewards, keep_fraction=1.0, min_reward=1.0) == [[1, 2], [], [0, 1]]


def test_raft_gold_reward_keeps_only_right_answers(tiny_model_dir, tmp_path, monkeypatch):
    from trl import ModelConfig

    from citing_trl.baselines import raft
    from citing_trl.evaluation.gold import is_correct
    from citing_trl.reward import GoldScorer

    args = RAFTConfig(output_dir=str(tmp_path / "raft"), num_stages=2, num_samples=3, min_reward=1.0, seed=7,
                      per_device_train_batch_size=2, num_train_epochs=1, learning_rate=1e-3, use_cpu=True, bf16=False,
                      save_strategy="no", logging_steps=1, max_length=128, disable_tqdm=True)
    margs = ModelConfig(model_name_or_path=str(tiny_model_dir), lora_r=4, lora_alpha=8, dtype="float32")
    monkeypatch.setattr(raft, "sample_answers", fake_sampler(lambda seed: (seed - 7) // 1000))
    out = RAFTTrainer(args, margs, GOLD_ROWS, GoldScorer(GOLD_ROWS)).train()

    s0 = out / "stage_0"
    rows = {r["id"]: r for r in GOLD_ROWS}
    for rec in map(json.loads, (s0 / "samples.jsonl").read_text().splitlines()):
        row = rows[rec["id"]]
        assert rec["answers"] == STAGE_SAMPLES[0][rec["id"]]
        assert rec["rewards"] == [float(is_correct("boolq", a, row["answers"], row["input"])) for a in rec["answers"]]
    kept = [json.loads(line) for line in (s0 / "kept.jsonl").read_text().splitlines()]
    assert [(k["id"], k["output"], k["reward"]) for k in kept] == [("b1", "Yes, it is.", 1.0), ("b3", "No.", 1.0)]
    stats = json.loads((s0 / "stats.json").read_text())
    assert stats["prompts_rejected"] == 1 and stats["prompts_all_accepted"] == 1 and stats["finetuned"] is True
    assert stats["equal_reward_prompts"] == 2 and stats["mean_reward_kept"] == 1.0
    assert (s0 / "adapter" / "adapter_model.safetensors").is_file()

    s1 = out / "stage_1"  # every answer wrong: nothing to train on, the stage keeps its start adapter
    stats = json.loads((s1 / "stats.json").read_text())
    assert stats["kept"] == 0 and stats["prompts_rejected"] == 3 and stats["finetuned"] is False
    assert (s1 / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (s0 / "adapter" / "adapter_model.safetensors").read_bytes()
    assert (out / "adapter_model.safetensors").read_bytes() == (s0 / "adapter" / "adapter_model.safetensors").read_bytes()


def test_raft_gold_reward_with_nothing_right_and_no_adapter_is_one_error(tiny_model_dir, tmp_path, monkeypatch):
    from trl import ModelConfig

    from citing_trl.baselines import raft
    from citing_trl.errors import DataError
    from citing_trl.reward import GoldScorer

    args = RAFTConfig(output_dir=str(tmp_path / "raft"), num_stages=1, num_samples=3, min_reward=1.0, seed=1,
                      use_cpu=True, bf16=False, save_strategy="no", disable_tqdm=True)
    margs = ModelConfig(model_name_or_path=str(tiny_model_dir), lora_r=4, lora_alpha=8, dtype="float32")
    monkeypatch.setattr(raft, "sample_answers", fake_sampler(lambda seed: 1))
    with pytest.raises(DataError, match="none of the 9 sampled answers reached reward 1.0"):
        RAFTTrainer(args, margs, GOLD_ROWS, GoldScorer(GOLD_ROWS)).train()


def load_launcher(name, monkeypatch):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "baselines" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"launcher_{name}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, f"launcher_{name}", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["raft", "rrhf"])
def test_launcher_reward_flags_are_one_config_error(name, tmp_path, monkeypatch):
    import sys

    from citing_trl.errors import ConfigError, DataError

    launcher = load_launcher(name, monkeypatch)
    base = [f"{name}.py", "--output_dir", str(tmp_path / "out"), "--use_cpu", "true"]
    monkeypatch.setattr(sys, "argv", [*base, "--reward", "gold", "--reward_model", str(tmp_path / "rm")])
    with pytest.raises(ConfigError, match="contradicts --reward gold") as err:
        launcher.main()
    assert err.value.flag == "reward_model"
    monkeypatch.setattr(sys, "argv", [*base, "--reward", "model"])
    with pytest.raises(ConfigError, match="needs --reward_model") as err:
        launcher.main()
    assert err.value.flag == "reward_model"
    monkeypatch.setattr(sys, "argv", [*base, "--reward", "gold"])  # the demo rows have no gold answers
    with pytest.raises(DataError, match="no gold answers"):
        launcher.main()
    monkeypatch.setattr(sys, "argv", [*base, "--reward", "reward-model"])
    with pytest.raises(ConfigError) as err:
        launcher.main()
    assert err.value.flag == "reward"
    assert not (tmp_path / "out" / "reward.json").exists()


def test_rrhf_launcher_refuses_given_scores_under_gold(tmp_path, monkeypatch):
    import sys

    from citing_trl.errors import ConfigError

    cands = tmp_path / "cands.jsonl"
    cands.write_text(json.dumps({**GOLD_ROWS[0], "candidates": ["yes", "no"], "scores": [1.0, 0.0]}) + "\n")
    launcher = load_launcher("rrhf", monkeypatch)
    monkeypatch.setattr(sys, "argv", ["rrhf.py", "--output_dir", str(tmp_path / "out"), "--reward", "gold",
                                      "--candidates_file", str(cands)])
    with pytest.raises(ConfigError, match="carry scores, which contradicts --reward gold") as err:
        launcher.main()
    assert err.value.flag == "candidates_file"


@pytest.mark.slow
def test_raft_launcher_gold_reward_on_smollm2(smollm2_dir, shared_data, tmp_path):
    """The real student, real rows (BoolQ + SQuAD v2 from ../shared/data), `--reward gold` through the launcher:
    every sampled answer's reward is the gold metric's verdict (is_correct), only right answers are kept, and
    reward.json says which reward the run used."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from citing_trl.data import load_instructions
    from citing_trl.evaluation.gold import is_correct

    repo = Path(__file__).resolve().parents[1]
    spec = f"boolq:{shared_data / 'boolq_dev.jsonl'}@3+squad_v2:{shared_data / 'squad_v2_dev_sample.json'}@1"
    out = tmp_path / "raft"
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, str(repo / "baselines" / "raft.py"), "--config", str(repo / "baselines/configs/raft_demo.yaml"),
         "--model_name_or_path", str(smollm2_dir), "--dataset", spec, "--max_samples", "4", "--sft_adapter", "",
         "--reward", "gold", "--reward_model", "", "--num_stages", "1", "--num_samples", "3",
         "--sample_max_new_tokens", "16", "--max_steps", "1", "--per_device_train_batch_size", "2",
         "--lora_r", "4", "--lora_alpha", "8", "--disable_tqdm", "true", "--output_dir", str(out)],
        capture_output=True, text=True, env=env, cwd=repo, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads((out / "reward.json").read_text())
    assert info["kind"] == "gold" and info["reward_model"] is None and info["min_reward"] == 1.0 and info["rows"] == 4
    rows = {r["id"]: r for r in load_instructions(spec, split="train", limit=4, seed=42)}
    samples = [json.loads(line) for line in (out / "stage_0" / "samples.jsonl").read_text().splitlines()]
    assert {s["id"] for s in samples} == set(rows)
    verdicts = []
    for s in samples:
        row = rows[s["id"]]
        expected = [float(is_correct(row["source"], a, row["answers"], row["input"])) for a in s["answers"]]
        assert s["rewards"] == expected, (s["id"], s["answers"])
        verdicts += expected
    kept = [json.loads(line) for line in (out / "stage_0" / "kept.jsonl").read_text().splitlines()]
    assert kept and all(k["reward"] == 1.0 for k in kept)
    stats = json.loads((out / "stage_0" / "stats.json").read_text())
    assert stats["samples"] == 12 and stats["mean_reward_all"] == pytest.approx(sum(verdicts) / 12)
    assert stats["prompts_rejected"] == sum(1 for s in samples if max(s["rewards"]) < 1.0)
    assert (out / "adapter_model.safetensors").is_file()
