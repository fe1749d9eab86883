"""RAFT: Reward rAnked FineTuning (Dong et al., 2023; arXiv 2304.06767), on LoRA.

T stages; in each one the current policy samples K answers per prompt (through :mod:`citing_trl.generation`,
default K = 8 at temperature 0.85 as in LMFlow's RAFT examples, from the full distribution: ``--sample_top_k 0``,
see :data:`~citing_trl.baselines.common.SamplingArguments`), the reward model scores them, the best answer
of each prompt is kept (or the top ``keep_fraction`` of each prompt's answers), and the current adapter is
fine-tuned on the kept set with TRL's ``SFTTrainer``. Unlike LMFlow, the loss is on the answer tokens only
(completion-only loss, as every SFT step of this suite). A prompt whose answers all get the same reward
carries no ranking signal: its first answer is kept all the same (RAFT keeps the best, and all are best), and
such prompts are counted (``stats.json``: ``equal_reward_prompts``).

With ``min_reward`` set, only answers whose reward reaches it can be kept: RAFT becomes rejection-sampling
fine-tuning. ``--reward gold`` (the verifiable 0/1 reward, :class:`~citing_trl.reward.GoldScorer`) sets
``min_reward = 1`` unless given, so only answers that are right under the row's gold metric are trained on,
never the "best" of all-wrong answers; prompts with no accepted answer (``prompts_rejected``) and with every
answer accepted (``prompts_all_accepted``) are counted. A stage that accepts nothing keeps its start adapter
(logged; ``finetuned: false``).

Each stage writes ``stage_<t>/samples.jsonl`` (answers + rewards), ``kept.jsonl``, ``stats.json`` (mean reward
of all answers and of the kept set) and its adapter, then a ``done`` marker last (:mod:`citing_trl.stages`);
a rerun skips finished stages and continues from the last finished adapter. The final adapter is copied to ``output_dir``.

Under several processes (``accelerate launch --num_processes N``) each rank samples and scores its own
contiguous slice of the stage's prompts (its answers also go to ``stage_<t>/samples.rank<r>.jsonl``, so a
killed stage resumes per rank), the slices are joined in prompt order, and every rank fine-tunes on the same
kept set, which the trainer's sampler splits between the ranks under DDP (:mod:`citing_trl.baselines.ranks`
says why). The main process alone writes the shared files (``samples.jsonl``, ``kept.jsonl``, stats, markers,
the final copy).
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import datasets
from accelerate import PartialState
from trl import SFTConfig, SFTTrainer

from citing_trl.baselines.common import SamplingArguments, load_policy, sample_answers
from citing_trl.baselines.ranks import RankDigestCallback, gather, part_path, shard
from citing_trl.distributed import check_engine, save_adapter
from citing_trl.errors import ConfigError, DataError, check
from citing_trl.generation import DecodingConfig
from citing_trl.jsonl import read_jsonl, write_jsonl
from citing_trl.pipeline import free_memory
from citing_trl.precision import NativeBf16
from citing_trl.prompts import instruction_messages
from citing_trl.sft import to_prompt_completion
from citing_trl.stages import is_done, write_marker

logger = logging.getLogger(__name__)


@dataclass
class RAFTConfig(NativeBf16, SFTConfig):
    """TRL ``SFTConfig`` (for each stage's fine-tuning) + RAFT's own fields. How answers are sampled is a
    :class:`~citing_trl.generation.DecodingConfig` given to :class:`RAFTTrainer` (``--sample_*`` flags,
    :data:`~citing_trl.baselines.common.SamplingArguments`)."""

    num_stages: int = field(default=3, metadata={"help": "T: sample-rank-finetune stages (LMFlow examples: 20)."})
    num_samples: int = field(default=8, metadata={"help": "K: answers sampled per prompt each stage (LMFlow: 8)."})
    keep_fraction: float | None = field(
        default=None,
        metadata={"help": "Keep this share of each prompt's answers (top by reward, at least one); unset = the best "
                          "answer only."},
    )
    min_reward: float | None = field(
        default=None,
        metadata={"help": "Keep only answers whose reward is at least this (rejection sampling); unset = keep the best "
                          "whatever its reward. --reward gold sets 1.0 when unset: only right answers are kept."},
    )
    prompts_per_stage: int | None = field(
        default=None, metadata={"help": "Prompts sampled for each stage (seeded, different per stage); unset = all."}
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory."})
    report_to: str | list[str] = field(default="none", metadata={"help": "Where to log (none, wandb, ...)."})

    def __post_init__(self):
        super().__post_init__()
        check(self.keep_fraction is None or 0.0 < self.keep_fraction <= 1.0, "keep_fraction", "must be in (0, 1] or unset",
              self.keep_fraction)
        for name in ("num_samples", "num_stages"):
            check(getattr(self, name) >= 1, name, "must be at least 1", getattr(self, name))


def select(samples: list[list[str]], rewards: list[list[float]], keep_fraction: float | None = None,
           min_reward: float | None = None) -> list[list[int]]:
    """Indices of the kept answers of each prompt: the argmax (first on ties), or the top ``keep_fraction``
    (at least one), best first; with ``min_reward`` only answers whose reward reaches it (possibly none)."""
    kept = []
    for answers, scores in zip(samples, rewards):
        if not answers:
            kept.append([])
            continue
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        n = 1 if keep_fraction is None else max(1, math.ceil(keep_fraction * len(answers)))
        kept.append([i for i in order[:n] if min_reward is None or scores[i] >= min_reward])
    return kept


class RAFTTrainer:
    """Runs the T stages of RAFT from an SFT adapter. ``scorer`` is a :class:`~citing_trl.reward.RewardScorer`,
    a :class:`~citing_trl.reward.GoldScorer` (or anything with ``.score(prompts, completions)``);
    ``sampling`` says how answers are sampled (default: ``SamplingArguments().build()``; ``do_sample`` and the
    seed are set per stage)."""

    def __init__(self, args: RAFTConfig, model_args, rows, scorer, sft_adapter: str | None = None,
                 sampling: DecodingConfig | None = None):
        self.args, self.model_args, self.rows, self.scorer = args, model_args, list(rows), scorer
        self.sft_adapter = sft_adapter
        self.sampling = sampling if sampling is not None else SamplingArguments().build()
        self.out = Path(args.output_dir)
        if not self.rows:
            raise DataError("RAFT: no prompts to train on (the data set is empty)")

    def stage_rows(self, t: int) -> list[dict]:
        if self.args.prompts_per_stage is None or self.args.prompts_per_stage >= len(self.rows):
            return self.rows
        return random.Random(self.args.seed + t).sample(self.rows, self.args.prompts_per_stage)

    def train(self) -> Path:
        state = PartialState()
        adapter = self.sft_adapter
        for t in range(self.args.num_stages):
            sdir = self.out / f"stage_{t}"
            if is_done(sdir / "done"):  # every rank looks before any rank can write it (the stage has collectives)
                logger.info("RAFT stage %d: done before (%s); skipped", t, sdir / "done")
            else:
                stats = self.stage(t, adapter, sdir)
                if state.is_main_process:
                    write_marker(sdir / "done", stats)  # last: a killed stage runs again
            state.wait_for_everyone()
            adapter = str(sdir / "adapter")
        if adapter and Path(adapter) != self.out and state.is_main_process:
            for f in Path(adapter).iterdir():
                if f.is_file():
                    shutil.copy2(f, self.out / f.name)
        state.wait_for_everyone()
        return self.out

    def stage(self, t: int, adapter: str | None, sdir: Path) -> dict:
        """Sample, score, keep and fine-tune from ``adapter`` into ``sdir/adapter``; returns the stage's stats
        (:func:`~citing_trl.stages.run_stage` writes them as the ``done`` marker once this returns)."""
        state = PartialState()
        sdir.mkdir(parents=True, exist_ok=True)
        rows = self.stage_rows(t)
        model, tokenizer, peft_config = load_policy(self.model_args, adapter)
        samples_path = sdir / "samples.jsonl"
        records = read_jsonl(samples_path)
        if len(records) != len(rows):  # not finished (or never started): sample and score this stage
            start, mine = shard(rows, state)  # this rank's slice; one process: all rows
            mine_path = part_path(samples_path, state)
            done = read_jsonl(mine_path) if mine_path != samples_path else []
            if [r["id"] for r in done] != [r["id"] for r in mine]:
                model.to(state.device)  # sample on this rank's device (the trainer moves it there anyway)
                done = self.sample_and_score(t, mine, model, tokenizer, seed_offset=start * self.args.num_samples)
                write_jsonl(mine_path, done)
            records = gather(done)
            if state.is_main_process and mine_path != samples_path:
                write_jsonl(samples_path, records)
        min_reward = self.args.min_reward
        kept_idx = select([r["answers"] for r in records], [r["rewards"] for r in records], self.args.keep_fraction,
                          min_reward)
        kept = [{"id": r["id"], "instruction": r["instruction"], "input": r["input"], "output": r["answers"][j],
                 "reward": r["rewards"][j]} for r, idx in zip(records, kept_idx) for j in idx if r["answers"][j].strip()]
        if state.is_main_process:
            write_jsonl(sdir / "kept.jsonl", kept)
        all_rewards = [s for r in records for s in r["rewards"]]
        stats = {
            "stage": t, "prompts": len(records), "samples": len(all_rewards), "kept": len(kept),
            "mean_reward_all": sum(all_rewards) / max(1, len(all_rewards)),
            "mean_reward_kept": sum(k["reward"] for k in kept) / max(1, len(kept)),
            "equal_reward_prompts": sum(1 for r in records if r["rewards"] and len(set(r["rewards"])) == 1),
            "start_adapter": adapter,
            "finetuned": bool(kept),
        }
        if min_reward is not None:
            stats.update({
                "min_reward": min_reward,
                "prompts_rejected": sum(1 for r in records if not any(s >= min_reward for s in r["rewards"])),
                "prompts_all_accepted": sum(1 for r in records if r["rewards"] and all(s >= min_reward for s in r["rewards"])),
            })
        logger.info("RAFT stage %d: %s", t, stats)
        if kept:
            self.finetune(model, tokenizer, peft_config, kept, sdir / "adapter", t)
        elif min_reward is not None and adapter:
            logger.warning("RAFT stage %d: no sampled answer reached reward %s (--min_reward) on any of %d prompts; "
                           "nothing to fine-tune on, the stage keeps its start adapter %s", t, min_reward,
                           len(records), adapter)
            if state.is_main_process:
                shutil.copytree(adapter, sdir / "adapter", dirs_exist_ok=True)
        elif min_reward is not None:
            raise DataError(f"RAFT stage {t}: none of the {len(all_rewards)} sampled answers reached reward "
                            f"{min_reward} (--min_reward; under --reward gold: none was right), and there is no start "
                            "adapter to keep (more --num_samples, or start from an --sft_adapter?)")
        else:
            raise ConfigError(f"RAFT stage {t}: every kept answer is empty; nothing to fine-tune on (more "
                              "--sample_max_new_tokens, or another SFT adapter?)")
        if state.is_main_process:
            (sdir / "stats.json").write_text(json.dumps(stats, indent=2))
            with (self.out / "stages.jsonl").open("a") as f:
                f.write(json.dumps(stats) + "\n")
        return stats

    def sample_and_score(self, t: int, rows: list[dict], model, tokenizer, seed_offset: int = 0) -> list[dict]:
        """Stage ``t``'s K answers for each of ``rows`` and their rewards, one record per row. ``seed_offset``
        (a rank's first flat answer index) seeds a rank's slice as one process would seed those answers."""
        prompts = [instruction_messages(r["instruction"], r.get("input") or "") for r in rows]
        gen = replace(self.sampling, do_sample=True, seed=self.args.seed + 1000 * t + seed_offset)
        groups = sample_answers(model, tokenizer, prompts, self.args.num_samples, gen, desc=f"RAFT stage {t}")
        flat = [(i, g.text) for i, gs in enumerate(groups) for g in gs]
        scores = self.scorer.score([prompts[i] for i, _ in flat], [text for _, text in flat]) if flat else []
        records = [{"id": r["id"], "instruction": r["instruction"], "input": r.get("input") or "",
                    "answers": [g.text for g in gs], "finish_reasons": [g.finish_reason for g in gs], "rewards": []}
                   for r, gs in zip(rows, groups)]
        for (i, _), s in zip(flat, scores):
            records[i]["rewards"].append(float(s))
        return records

    def finetune(self, model, tokenizer, peft_config, kept: list[dict], target: Path, t: int) -> None:
        data = to_prompt_completion(datasets.Dataset.from_list([{k: r[k] for k in ("instruction", "input", "output")}
                                                                for r in kept]))
        model.train()
        args = replace(self.args, output_dir=str(target), seed=self.args.seed + t)
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                             peft_config=peft_config, callbacks=[RankDigestCallback()])
        check_engine(trainer.accelerator)
        trainer.train()
        save_adapter(trainer, target)
        del trainer, model
        free_memory()
