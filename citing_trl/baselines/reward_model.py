"""Reward model: TRL ``RewardTrainer`` with LoRA on the student's backbone, and a scorer for RL loops (contract C3).

Training. The backbone is loaded as ``AutoModelForSequenceClassification(num_labels=1)``; LoRA adapts the
attention projections and the fresh ``score`` head is trained in full and saved with the adapter
(``modules_to_save=["score"]``). Pairs are TRL's conversational format (prompt = the plain instruction turn,
chosen/rejected = one assistant turn), so RewardTrainer tokenizes ``prompt + answer`` with the chat template
and, for conversational data, appends NO extra EOS (TRL 1.16 ``RewardTrainer._prepare_dataset`` adds EOS to
plain-text rows only; the chat template already closes the turn). The reward is read at the last non-pad
token: when the tokenizer's pad token is its EOS (SmolLM2: both ``<|im_end|>``), the reward tokenizer gets a
separate pad token from its own vocabulary (``<|endoftext|>``) so pooling never skips the closing tokens.

Scoring. :class:`RewardScorer` tokenizes every (prompt, completion) with the same TRL function RewardTrainer
uses (``trl.data_utils._tokenize`` on ``prompt + [assistant turn]``), right-pads with the saved pad token and
reads the pooled logit, so train-time and score-time text are identical (tested). Completions arrive as
text and are re-tokenized with the reward model's own tokenizer: a policy with a different tokenizer works;
token ids are never passed between the two. The scorer lives in the core (:mod:`citing_trl.reward`), so the
revision gate uses it without importing the baselines.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from trl import RewardConfig

from citing_trl.baselines.preferences import PreferenceArguments, load_preferences, split_pairs, to_dataset
from citing_trl.baselines.ranks import RankDigestCallback
from citing_trl.reward import META_FILE, RewardScorer, load_backbone  # noqa: F401  (the scorer lives in the core)
from citing_trl.models import load_tokenizer, resolve_model_path
from citing_trl.sft import lora_config

logger = logging.getLogger(__name__)


@dataclass
class RewardModelConfig(RewardConfig):
    """TRL ``RewardConfig`` with this suite's defaults (CPU-friendly, LoRA, score head saved)."""

    max_length: int | None = field(
        default=512, metadata={"help": "Pairs longer than this (prompt + answer tokens) are dropped, as TRL does."}
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory."})
    report_to: str | list[str] = field(default="none", metadata={"help": "Where to log (none, wandb, ...)."})
    score_batch_size: int = field(default=8, metadata={"help": "Rows per forward pass when scoring held-out pairs."})


def reward_tokenizer(name_or_path: str):
    """The backbone's tokenizer with a pad token that is not its EOS, when the vocabulary has one."""

    tokenizer = load_tokenizer(name_or_path)
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        vocab = tokenizer.get_vocab()
        for candidate in (tokenizer.unk_token, "<|endoftext|>", "<pad>", "<unk>"):
            if candidate and candidate in vocab and vocab[candidate] != tokenizer.eos_token_id:
                tokenizer.pad_token = candidate
                break
        else:
            logger.warning("reward tokenizer: pad token equals EOS and no other pad token exists; the reward is "
                           "read at the last token that is not EOS (the same at training and scoring)")
    return tokenizer


def reward_lora_config(model_args):
    """The student's LoRA settings for a sequence-classification backbone whose score head is trained in full."""

    return lora_config(model_args, lora_task_type="SEQ_CLS", lora_modules_to_save=["score"])


def train_reward_model(pref_args: PreferenceArguments, training_args: RewardModelConfig, model_args):
    """Train the reward model on ``pref_args`` pairs; save adapter + head + tokenizer + metadata; report the
    held-out pair accuracy (``eval_metrics.json``). Returns (trainer, metrics)."""
    from transformers import set_seed
    from trl import RewardTrainer


    pairs, stats = load_preferences(pref_args)
    train, held = split_pairs(pairs, pref_args.eval_fraction, pref_args.preference_seed)
    logger.info("reward model: %d training pairs, %d held out (%s)", len(train), len(held), dict(stats))
    set_seed(training_args.seed)
    base = resolve_model_path(model_args.model_name_or_path)
    tokenizer = reward_tokenizer(base)
    model = load_backbone(base, tokenizer, model_args.dtype)
    training_args.pad_token = tokenizer.pad_token
    trainer = RewardTrainer(
        model=model, args=training_args, train_dataset=to_dataset(train), processing_class=tokenizer,
        peft_config=reward_lora_config(model_args), callbacks=[RankDigestCallback()],
    )
    trainer.train()
    out = Path(training_args.output_dir)
    trainer.save_model(str(out))
    metrics = {"train_pairs": len(train), "held_out_pairs": len(held), **{k: int(v) for k, v in stats.items()}}
    if trainer.accelerator.is_main_process:
        (out / META_FILE).write_text(json.dumps({
            "base_model": base, "pad_token": tokenizer.pad_token, "max_length": training_args.max_length,
            "format": "trl-conversational: chat_template(prompt + [assistant answer]), no extra EOS",
        }, indent=2))
        if held:
            scorer = RewardScorer(trainer.accelerator.unwrap_model(trainer.model), tokenizer,
                                  batch_size=training_args.score_batch_size)
            metrics.update(pair_accuracy(scorer, held))
        (out / "eval_metrics.json").write_text(json.dumps(metrics, indent=2))
        logger.info("reward model metrics: %s", metrics)
    return trainer, metrics


def pair_accuracy(scorer: "RewardScorer", pairs: list[dict]) -> dict:
    """Share of pairs whose chosen answer scores above the rejected one (ties count as wrong)."""
    prompts = [p["prompt"] for p in pairs]
    chosen = scorer.score(prompts, [p["chosen"][-1]["content"] for p in pairs])
    rejected = scorer.score(prompts, [p["rejected"][-1]["content"] for p in pairs])
    wins = sum(c > r for c, r in zip(chosen, rejected))
    return {"held_out_accuracy": wins / len(pairs), "held_out_margin": sum(c - r for c, r in zip(chosen, rejected))
            / len(pairs)}
