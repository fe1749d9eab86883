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
