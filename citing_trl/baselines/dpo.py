"""DPO (Rafailov et al., 2023) on the same revision ≻ answer pairs: TRL's ``DPOTrainer`` with LoRA.

Beyond the paper: the modern rival that uses the teacher's revisions as preferences instead of as targets.
The policy starts from the SFT adapter (trainable). TRL 1.16 then copies that adapter into a frozen ``ref``
adapter and uses it as the reference, so the reference is the SFT policy itself, as in the DPO paper, without a
second copy of the backbone. With no SFT adapter a fresh LoRA adapter is trained and the reference is the base
model (adapters disabled).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from trl import DPOConfig as _TRLDPOConfig
from trl import DPOTrainer

from citing_trl.baselines.common import load_policy
from citing_trl.baselines.preferences import PreferenceArguments, load_preferences, pairs_dataset, split_pairs
from citing_trl.baselines.ranks import RankDigestCallback
from citing_trl.distributed import check_engine, save_adapter
from citing_trl.precision import NativeBf16

logger = logging.getLogger(__name__)


@dataclass
class DPOConfig(NativeBf16, _TRLDPOConfig):
    """TRL ``DPOConfig`` with this suite's CPU-friendly defaults."""

    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory."})
    report_to: str | list[str] = field(default="none", metadata={"help": "Where to log (none, wandb, ...)."})


def run_dpo(pref_args: PreferenceArguments, training_args: DPOConfig, model_args, sft_adapter: str | None = None):
    """Train DPO on ``pref_args`` pairs from the SFT adapter; saves the adapter (and tokenizer) to output_dir."""
    pairs, stats = load_preferences(pref_args)
    train, held = split_pairs(pairs, pref_args.eval_fraction, pref_args.preference_seed)
    logger.info("DPO: %d training pairs, %d held out (%s)", len(train), len(held), dict(stats))
    model, tokenizer, peft_config = load_policy(model_args, sft_adapter)
    trainer = DPOTrainer(
        model=model, args=training_args, train_dataset=pairs_dataset(train),
        eval_dataset=pairs_dataset(held) if held else None, processing_class=tokenizer, peft_config=peft_config,
        callbacks=[RankDigestCallback()],  # <output_dir>/rank_digests.json under several processes
    )
    check_engine(trainer.accelerator)
    trainer.train()
    out = Path(training_args.output_dir)
    save_adapter(trainer, out)
    return trainer
