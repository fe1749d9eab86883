"""Supervised fine-tuning of the student (Algorithm 1 lines 2-4, Eq. 3).

Rows (instruction, input) -> output become conversational prompt/completion pairs; TRL's SFTTrainer
then puts the loss on the completion tokens only. The same helpers build the student for every later
stage: a fresh LoRA adapter here, or an existing adapter that keeps training (CITING rounds).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

from trl import get_peft_config

from citing_trl.data import FAMILIES, SOURCES, SPLITS, load_instructions, local_files_in_spec
from citing_trl.distributed import check_engine, save_adapter
from citing_trl.errors import check, check_choice
from citing_trl.models import load_student_tokenizer, resolve_dtype, resolve_model_path
from citing_trl.prompts import instruction_messages

logger = logging.getLogger(__name__)


@dataclass
class DataArguments:
    """Which instructions to train on. Shared by the SFT, CITING and inference recipes."""

    dataset: str = field(
        default="demo",
        metadata={
            "help": "Data to use: 'demo' (shipped with the package), a family name (" + ", ".join(
                f"'{name}'" for name in FAMILIES) + "; Hub), a source name (" + ", ".join(SOURCES) + "), "
            "'<source>:<file>', a local .json/.jsonl file of instructions, or a '+' mixture with optional per-part caps "
            "('boolq:b.jsonl@100+nq_open:n.jsonl@100'; see citing_trl/data/spec.py)."
        },
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to use (train/validation/test)."})
    max_samples: int | None = field(default=None, metadata={"help": "Keep at most this many rows (after shuffling)."})
    dataset_seed: int = field(default=42, metadata={"help": "Seed for splits, mixtures and sub-sampling."})
    merge_adapter: bool = field(
        default=False, metadata={"help": "Also save a merged (base + LoRA) copy under <output_dir>/merged."}
    )

    def __post_init__(self):
        check(bool(self.dataset and self.dataset.strip()), "dataset", "must not be empty", self.dataset)
        check_choice("dataset_split", self.dataset_split, SPLITS)
        if self.max_samples is not None:
            check(self.max_samples >= 1, "max_samples", "must be >= 1 (leave it unset for every row)", self.max_samples)
        for path in local_files_in_spec(self.dataset):
            check(Path(path).is_file(), "dataset", f"names a file that does not exist ({path})", self.dataset)


def load_rows(data_args: DataArguments):
    return load_instructions(
        data_args.dataset, split=data_args.dataset_split, limit=data_args.max_samples, seed=data_args.dataset_seed
    )


def to_prompt_completion(dataset):
    """(instruction, input, output) rows -> conversational {prompt, completion} rows for SFTTrainer."""

    def convert(row):
        return {
            "prompt": instruction_messages(row["instruction"], row.get("input") or ""),
            "completion": [{"role": "assistant", "content": row["output"]}],
        }

    return dataset.map(convert, remove_columns=dataset.column_names, desc="SFT rows")


DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def lora_config(model_args, **overrides):
    """The LoRA config of TRL's ``ModelConfig``, built by TRL's own ``get_peft_config``. LoRA is always on in
    this suite (paper §4.2), whatever ``use_peft`` says, and adapts q/k/v/o when ``lora_target_modules`` is
    unset. ``overrides`` are ModelConfig fields for this one adapter (``lora_task_type="SEQ_CLS"``, say)."""
    targets = model_args.lora_target_modules or DEFAULT_LORA_TARGETS
    return get_peft_config(dataclasses.replace(model_args, use_peft=True, lora_target_modules=targets, **overrides))


def load_student_for_training(model_args, adapter: str | None = None):
    """Base model (+ an existing LoRA adapter that stays trainable). Returns (model, tokenizer, peft_config):
    peft_config is set only when a fresh adapter must be created by the trainer."""
    from transformers import AutoModelForCausalLM


    path = resolve_model_path(model_args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(model_args.dtype))
    tokenizer = load_student_tokenizer(path, adapter)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        return model, tokenizer, None
    return model, tokenizer, lora_config(model_args)


def save_outputs(trainer, output_dir: str, merge: bool = False) -> Path:
    """Save adapter + tokenizer (and optionally a merged model) from the main process."""
    save_adapter(trainer, output_dir)
    if merge and trainer.accelerator.is_main_process:
        merged = trainer.model.merge_and_unload() if hasattr(trainer.model, "merge_and_unload") else trainer.model
        merged.save_pretrained(Path(output_dir) / "merged")
        trainer.processing_class.save_pretrained(Path(output_dir) / "merged")
    return Path(output_dir)


def run_sft(data_args: DataArguments, training_args, model_args, adapter: str | None = None):
    """Fine-tune the student on (instruction -> ground truth) with LoRA; returns the trainer."""
    from trl import SFTTrainer

    rows = to_prompt_completion(load_rows(data_args))
    model, tokenizer, peft_config = load_student_for_training(model_args, adapter=adapter)
    trainer = SFTTrainer(
        model=model, args=training_args, train_dataset=rows, processing_class=tokenizer, peft_config=peft_config
    )
    check_engine(trainer.accelerator)
    trainer.train()
    save_outputs(trainer, training_args.output_dir, merge=data_args.merge_adapter)
    return trainer
