"""RLOO baseline: TRL 1.16's maintained ``RLOOTrainer`` on the same start and reward as PPO.

The SFT adapter is merged into the backbone and a fresh LoRA adapter is trained, so RLOO's reference (the
policy with adapters disabled) is the SFT model, as in :mod:`citing_trl.baselines.ppo`. ``<output_dir>`` holds
TRL's adapter (relative to the SFT-merged backbone); ``<output_dir>/base_adapter`` the same policy as one LoRA
adapter on the base model (SFT and RL adapters combined exactly). The reward reaches
RLOOTrainer as a callable around the same scorer PPO uses (``RewardScorer``, a ``module:function``, or with
``--reward gold`` the verifiable :class:`~citing_trl.reward.GoldScorer` on the training rows), so both methods score
exactly the text the reward model was trained on.
"""

from __future__ import annotations

import os
from pathlib import Path

from datasets import Dataset
from transformers.trainer_utils import get_last_checkpoint
from trl import RLOOTrainer

from citing_trl.baselines.ppo.config import RLHFArguments, check_reward_settings
from citing_trl.baselines.ppo.launch import build_reward_fn, load_rlhf_policy, record_reward, training_prompts
from citing_trl.baselines.ppo.lora import save_policy_adapter
from citing_trl.baselines.ranks import RankDigestCallback
from citing_trl.distributed import check_engine, save_adapter
from citing_trl.sft import load_rows, lora_config


def _completion_text(completion) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if m.get("role") == "assistant") or \
        "".join(m.get("content", "") for m in completion)


def rloo_reward(reward_fn):
    """Adapt f(prompts, answer texts) to RLOOTrainer's reward-function signature."""

    def reward(prompts, completions, **kwargs):
        return [float(s) for s in reward_fn(list(prompts), [_completion_text(c) for c in completions])]

    reward.__name__ = getattr(reward_fn, "__name__", type(reward_fn).__name__)  # TRL logs rewards/<name>/mean
    return reward


def run_rloo(rlhf_args: RLHFArguments, data_args, config, model_args, reward: str = "model"):
    """Train RLOO from the launcher's parsed settings (``reward``: ``RewardArguments.reward``) and save it."""
    check_reward_settings(rlhf_args, reward)
    rows = load_rows(data_args)
    reward_fn = build_reward_fn(rlhf_args, reward, rows)
    record_reward(rlhf_args, reward, rows, config.output_dir, "rloo")
    model, tokenizer = load_rlhf_policy(model_args, rlhf_args.sft_adapter)
    dataset = Dataset.from_list([{"prompt": p} for p in training_prompts(rows)])
    trainer = RLOOTrainer(model=model, reward_funcs=rloo_reward(reward_fn), args=config, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=lora_config(model_args),
                          callbacks=[RankDigestCallback()])
    check_engine(trainer.accelerator)
    trainer.train(resume_from_checkpoint=_last_checkpoint(config.output_dir))
    save_adapter(trainer, config.output_dir)  # TRL's layout: the RL adapter alone, relative to the SFT-merged backbone
    if trainer.accelerator.is_main_process:  # <output_dir>/base_adapter: one adapter on the base model, as for PPO
        save_policy_adapter(trainer.accelerator.unwrap_model(trainer.model), "default", rlhf_args.sft_adapter,
                            Path(config.output_dir) / "base_adapter", tokenizer)
    return trainer


def _last_checkpoint(output_dir: str):
    return get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
