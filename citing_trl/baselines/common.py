"""Pieces every baseline shares: where the SFT start and the reward model are, how answers are sampled
(:data:`SamplingArguments`), loading the SFT policy, and the teacher revisions of a CITING run."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from citing_trl.configs import prefixed
from citing_trl.errors import check_choice
from citing_trl.generation import DecodingConfig, generate
from citing_trl.jsonl import read_jsonl
from citing_trl.run_layout import round_dirs
from citing_trl.sft import load_student_for_training

logger = logging.getLogger(__name__)

SamplingArguments = prefixed(
    DecodingConfig, "sample_", name="SamplingArguments",
    only=("max_new_tokens", "batch_size", "temperature", "top_p", "top_k"),
    defaults={"max_new_tokens": 128, "temperature": 0.85, "top_k": 0},
    doc="""How RRHF and RAFT sample answers: :class:`~citing_trl.generation.DecodingConfig` fields as
    ``--sample_*`` flags (``--sample_max_new_tokens``, ``--sample_batch_size``, ``--sample_temperature``,
    ``--sample_top_p``, ``--sample_top_k``); ``build()`` gives the ``DecodingConfig``, and the trainer adds
    ``do_sample=True`` and its own seed. Defaults: temperature 0.85 (LMFlow's RAFT examples), 128 new tokens,
    ``top_k = 0``, the full distribution. That last one is a deliberate fix: these baselines used to leave top_k
    unset, so transformers' default ``top_k = 50`` silently truncated every sample; set ``--sample_top_k 50`` to
    get the old behaviour back.""",
)


@dataclass
class StartArguments:
    """Where every baseline starts; declared once here, inherited by :class:`BaselineArguments` (RRHF, RAFT, DPO,
    sft_more) and :class:`~citing_trl.baselines.ppo.config.RLHFArguments` (PPO, RLOO)."""

    sft_adapter: str | None = field(
        default=None,
        metadata={"help": "The SFT LoRA adapter every method starts from (a CITING run's `sft/`, Algorithm 1 lines "
                          "2-4; PPO and RLOO merge it into the backbone, so their reference policy is the SFT model). "
                          "Empty: a fresh adapter on the base model."},
    )


@dataclass
class BaselineArguments(StartArguments):
    """Shared inputs of the RRHF / RAFT / DPO / sft_more launchers."""

    reward_model: str | None = field(
        default=None, metadata={"help": "Reward model folder written by baselines/reward_model.py (RRHF, RAFT)."}
    )
    candidates_file: str | None = field(
        default=None,
        metadata={"help": "RRHF: a .jsonl of {id, instruction, input?, candidates, scores?} rows to use as they are "
                          "(no sampling; rows without scores are scored by --reward_model)."},
    )
    citing_run: str | None = field(
        default=None,
        metadata={"help": "A CITING run folder whose teacher revisions (round_<k>/revisions.jsonl) join the RRHF "
                          "candidates; with --preferences unset, DPO takes its pairs from here too."},
    )


REWARDS = ("model", "gold")


@dataclass
class RewardArguments:
    """Which reward the reward-driven baselines (RAFT, RRHF, PPO, RLOO) optimise; parsed next to each one's own
    arguments so the flag is declared once."""

    reward: str = field(
        default="model",
        metadata={"help": "'model': a trained reward model (RRHF/RAFT --reward_model, PPO/RLOO --reward_model_path). "
                          "'gold': the verifiable reward citing_trl.reward.GoldScorer, 1 when an answer is right under "
                          "its source's primary gold metric (the notion of right the CITING gold gate uses), else 0; "
                          "needs training rows with gold answers."},
    )

    def __post_init__(self):
        check_choice("reward", self.reward, REWARDS)


def load_policy(model_args, sft_adapter: str | None):
    """Base model + the SFT adapter, trainable (or a fresh LoRA config when there is no adapter).
    Returns (model, tokenizer, peft_config)."""
    if sft_adapter and not (Path(sft_adapter) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"--sft_adapter {sft_adapter}: no adapter_config.json there (expected a LoRA adapter folder)")
    return load_student_for_training(model_args, adapter=sft_adapter or None)


def text_key(row: dict) -> str:
    """A row's identity by its text, for matching rows whose ids were made by another loader."""
    def norm(text: str | None) -> str:
        return re.sub(r"\s+", " ", text or "").strip().lower()

    return f"{norm(row.get('instruction'))}\n{norm(row.get('input'))}"


def revisions_for(revisions: dict[str, list[str]], row: dict) -> list[str]:
    return revisions.get(row.get("id")) or revisions.get(text_key(row)) or []


def run_revisions(run_dir: str | Path | None) -> dict[str, list[str]]:
    """The accepted teacher revisions of every round of a CITING run (in round order, no repeats), keyed by row
    id and by :func:`text_key`; look them up with :func:`revisions_for`."""
    if not run_dir:
        return {}
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"--citing_run {run_dir}: no such folder")
    out: dict[str, list[str]] = {}
    for rdir in round_dirs(run_dir):
        for rec in read_jsonl(rdir / "revisions.jsonl"):
            text = (rec.get("revision") or "").strip()
            for key in (rec["id"], text_key(rec)):
                if text and text not in out.setdefault(key, []):
                    out[key].append(text)
    return out


def sample_answers(model, tokenizer, prompts: list[list[dict]], num_samples: int, gen_config, desc: str) -> list[list]:
    """``num_samples`` sampled answers per prompt through the project's one generation routine.
    Returns one list of :class:`~citing_trl.generation.Generation` per prompt."""
    if num_samples <= 0 or not prompts:
        return [[] for _ in prompts]
    flat = [p for p in prompts for _ in range(num_samples)]
    gens = generate(model, tokenizer, flat, gen_config, desc=desc)
    return [gens[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]
