"""What one fine-tuning run consumed: optimizer steps, rows and tokens, counted the same way for every trainer.

A CITING round writes it as ``round_<k>/train_stats.json`` (:class:`~citing_trl.pipeline.CitingPipeline`), and the
compute-matched control ``sft_more`` (:mod:`citing_trl.baselines.sft_more`) reads the rounds' figures to train the
same number of optimizer steps, then writes its own with the same function, so the two sides compare like with
like.

Tokens are counted on the micro-batches the trainer actually trained on (:class:`TokenCounter` hooks
``training_step``), summed over processes:

- ``all``: the tokens of every row in the batch (prompt + completion), padding excluded (the attention mask; a
  padding-free batch counts every position);
- ``completion``: the tokens that carry the loss (label != -100), i.e. the completion tokens under completion-only
  loss.
"""

from __future__ import annotations

import json
from pathlib import Path

TRAIN_STATS_FILE = "train_stats.json"


class TokenCounter:
    """Trainer mixin (put it before ``SFTTrainer`` in the bases): counts the tokens of every micro-batch trained on.
    The local counts are in ``self.tokens_trained``; :func:`train_stats` sums them over processes."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        counts = getattr(self, "tokens_trained", None)
        if counts is None:
            counts = self.tokens_trained = {"all": 0, "completion": 0}
        if "attention_mask" in inputs:
            counts["all"] += int(inputs["attention_mask"].sum())
        elif "input_ids" in inputs:
            counts["all"] += int(inputs["input_ids"].numel())
        if "labels" in inputs:
            counts["completion"] += int((inputs["labels"] != -100).sum())
        elif "completion_mask" in inputs:
            counts["completion"] += int(inputs["completion_mask"].sum())
        return super().training_step(model, inputs, num_items_in_batch)


def train_stats(trainer, **extra) -> dict:
    """The run's figures after ``trainer.train()``; every process must call it (the token counts are summed over
    processes). ``extra`` keys are added as they are (e.g. ``revision_rows``)."""
    import torch

    local = getattr(trainer, "tokens_trained", None) or {"all": 0, "completion": 0}
    counts = torch.tensor([local["all"], local["completion"]], dtype=torch.int64, device=trainer.args.device)
    counts = trainer.accelerator.reduce(counts, reduction="sum").tolist()
    args = trainer.args
    world = trainer.accelerator.num_processes
    return {
        "optimizer_steps": int(trainer.state.global_step),
        "rows": len(trainer.train_dataset) if trainer.train_dataset is not None else None,
        "epochs": trainer.state.epoch,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "world_size": world,
        "rows_per_step": args.per_device_train_batch_size * args.gradient_accumulation_steps * world,
        "tokens": {"all": int(counts[0]), "completion": int(counts[1])},
        **extra,
    }


def write_train_stats(folder: str | Path, stats: dict) -> Path:
    path = Path(folder) / TRAIN_STATS_FILE
    path.write_text(json.dumps(stats, indent=2))
    return path
