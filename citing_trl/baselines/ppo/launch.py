"""What ``baselines/ppo_rlhf.py`` needs around the trainers, shared by PPO and RLOO: the reward as a callable
(a reward model, a ``module:function`` or the gold reward), the SFT-merged policy with its tokenizer, the training
rows and prompts, and :func:`run_ppo`."""

from __future__ import annotations

import importlib
import os

import torch
from transformers import AutoModelForCausalLM

from citing_trl.baselines.ppo.config import (
    PPOConfig,
    PPOError,
    RLHFArguments,
    check_ppo_sampling,
    check_reward_settings,
)
from citing_trl.baselines.ppo.lora import merge_sft_adapter
from citing_trl.baselines.ppo.trainer import PPOTrainer, RewardFn
from citing_trl.baselines.reward_model import reward_info, write_reward_info
from citing_trl.cli import process_rank
from citing_trl.generation import DecodingConfig
from citing_trl.models import load_student_tokenizer, resolve_dtype, resolve_model_path
from citing_trl.prompts import instruction_messages
from citing_trl.reward import GoldScorer, RewardScorer  # contract C3
from citing_trl.sft import load_rows, lora_config


def build_reward_fn(args: RLHFArguments, reward: str = "model", rows: list[dict] | None = None) -> RewardFn:
    """The reward as a callable on (chat-message prompts, answer texts). ``reward`` is ``RewardArguments.reward``:
    'gold' scores with :class:`~citing_trl.reward.GoldScorer` on the training ``rows`` (their prompts are
    :func:`training_prompts` of the same rows), 'model' with the reward model or the reward function."""
    check_reward_settings(args, reward)
    if reward == "gold":
        return GoldScorer(rows or [])
    if args.reward_function:
        module, _, name = args.reward_function.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise PPOError(f"--reward_function {args.reward_function!r} cannot be imported: {err}") from err
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else None
    return RewardScorer.load(args.reward_model_path, device=device).score


def record_reward(args: RLHFArguments, reward: str, rows: list[dict], output_dir: str, method: str) -> None:
    """Write ``<output_dir>/reward.json`` (which reward this run optimises, as RAFT and RRHF do), from one process."""
    if process_rank() == 0:
        write_reward_info(output_dir, reward_info(reward, args.reward_model_path, rows, method, args.reward_function))


def load_rlhf_policy(model_args, sft_adapter: str | None):
    """Backbone with the SFT adapter merged in, and the tokenizer saved with that adapter (chat template)."""
    path = resolve_model_path(model_args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(model_args.dtype))
    tokenizer = load_student_tokenizer(path, sft_adapter)
    return merge_sft_adapter(model, sft_adapter), tokenizer


def training_prompts(rows) -> list[list[dict]]:
    """The chat prompt the policy answers for each row (the prompt :class:`GoldScorer` matches rows by)."""
    return [instruction_messages(r["instruction"], r.get("input") or "") for r in rows]


def run_ppo(rlhf_args: RLHFArguments, data_args, config: PPOConfig, model_args,
            sampling: DecodingConfig | None = None, reward: str = "model") -> PPOTrainer:
    """Train PPO from the launcher's parsed settings (``sampling``: the built ``--sample_*`` view; ``reward``:
    ``RewardArguments.reward``) and save it."""
    if sampling is not None:
        check_ppo_sampling(sampling)  # before any model is loaded
    check_reward_settings(rlhf_args, reward)
    rows = load_rows(data_args)
    reward_fn = build_reward_fn(rlhf_args, reward, rows)
    record_reward(rlhf_args, reward, rows, config.output_dir, "ppo")
    model, tokenizer = load_rlhf_policy(model_args, rlhf_args.sft_adapter)
    trainer = PPOTrainer(config, model, tokenizer, training_prompts(rows), reward_fn, lora_config(model_args),
                         reward_model_path=rlhf_args.reward_model_path, sft_adapter=rlhf_args.sft_adapter,
                         sampling=sampling)
    trainer.train()
    trainer.save_model()
    return trainer
