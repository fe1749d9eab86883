"""``sft_more``: the compute-matched control for CITING (issue 18 item 2).

CITING's rounds train the SFT adapter further, so a CITING gain may come from learning from revisions or merely
from training longer. ``sft_more`` separates the two: it continues SFT from the same SFT adapter (a CITING run's
``sft/``) on the *gold* answers of the same curriculum instructions the rounds trained on, for exactly as many
optimizer steps as all the rounds together took.

What it reads from a finished CITING run folder (``--citing_run``):

- ``round_<k>/train_stats.json`` (one per round, written by the pipeline; :mod:`citing_trl.train_stats`): each
  round's optimizer steps, rows per step and tokens. The total steps become ``max_steps``; a run made before
  these files existed is refused with one line that says how to get them.
- ``round_<k>/revisions.jsonl``: the ids of the instructions each round trained on. Every round contributes its
  rows again (a row trained in two rounds appears twice), so ``sft_more`` sees the instruction mix CITING saw.
- ``instructions.jsonl``: the curriculum rows with their gold answer (``output``; else the first of ``answers``).
  With ``--gold_from dataset`` the gold is looked up in the ``--dataset`` rows instead (by id, then by text).
  Rows whose gold is missing are skipped and counted; none left is an error.

If the gold rows are fewer than steps × rows per step, the trainer cycles over them for more epochs. With
``match_batch`` (default) one step takes as many rows as one CITING step did (per-device batch and gradient
accumulation copied from the run's record), so steps and rows line up; tokens differ by construction (gold
answers vs teacher revisions, the plain instruction prompt vs the revision prompt pr(x, c, r)) and are reported
on both sides, counted the same way. Unlike the rounds, whose learning-rate schedule restarts each round, this
is one run of ``max_steps`` steps: with a constant schedule (the demo's) the two are the same.

Output (``output_dir``): the adapter and tokenizer (loaded by the answering stage like RAFT's or RRHF's),
``stats.json`` (steps matched, CITING's steps per round, rows, skipped rows, tokens of both sides) and a ``done``
marker (:mod:`citing_trl.stages`); a rerun after ``done`` does nothing, an interrupted run trains again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from trl import SFTConfig, SFTTrainer

from citing_trl.baselines.common import load_policy, text_key
from citing_trl.distributed import check_engine, save_adapter
from citing_trl.errors import ConfigError, DataError, check_choice
from citing_trl.jsonl import read_jsonl
from citing_trl.pipeline import free_memory
from citing_trl.precision import NativeBf16
from citing_trl.revision import gold_answers
from citing_trl.run_layout import round_dirs, round_index
from citing_trl.sft import to_prompt_completion
from citing_trl.stages import run_stage
from citing_trl.train_stats import TRAIN_STATS_FILE, TokenCounter, train_stats

logger = logging.getLogger(__name__)

GOLD_FROM = ("run", "dataset")


class CitingRunError(DataError):
    """The ``--citing_run`` folder is missing, unfinished, or lacks a record ``sft_more`` needs."""


@dataclass
class SFTMoreConfig(NativeBf16, SFTConfig):
    """TRL ``SFTConfig`` for the continued SFT + the control's own fields. ``max_steps`` is not yours to set: it is
    the CITING run's total optimizer steps (a different value is an error)."""

    match_batch: bool = field(
        default=True,
        metadata={"help": "Take per_device_train_batch_size and gradient_accumulation_steps from the CITING run's "
                          "record, so one step trains on as many rows as one CITING step did. False: keep this "
                          "config's (stats.json then shows the two differ)."},
    )
    gold_from: str = field(
        default="run",
        metadata={"help": "Where the gold answers come from: 'run' (the CITING run's instructions.jsonl) or "
                          "'dataset' (the --dataset/--dataset_split rows, matched by id, then by instruction text)."},
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory."})
    report_to: str | list[str] = field(default="none", metadata={"help": "Where to log (none, wandb, ...)."})

    def __post_init__(self):
        if self.completion_only_loss is False:
            raise ConfigError("sft_more trains on the answer only, as SFT and the CITING rounds do; "
                              "completion_only_loss cannot be False", flag="completion_only_loss")
        self.completion_only_loss = True
        check_choice("gold_from", self.gold_from, GOLD_FROM)
        super().__post_init__()


class SFTMoreTrainer(TokenCounter, SFTTrainer):
    """SFTTrainer that counts the tokens it trains on (for ``stats.json``)."""

    _tag_names = ["trl", "sft", "citing-compute-matched-control"]


@dataclass
class CitingRecord:
    """What a finished CITING run says about its rounds' training."""

    run: Path
    rounds: list[dict]  # each round's train_stats.json
    row_ids: list[list[str]]  # ids trained on in each round (revisions.jsonl), in order
    revision_records: list[list[dict]]

    @property
    def steps(self) -> int:
        return sum(r["optimizer_steps"] for r in self.rounds)

    def tokens(self) -> dict:
        return {key: sum(r["tokens"][key] for r in self.rounds) for key in ("all", "completion")}


def read_citing_run(run_dir: str | Path | None) -> CitingRecord:
    """The rounds of a finished CITING run (see the module docstring); one clear error for anything missing."""
    if not run_dir:
        raise CitingRunError("sft_more needs --citing_run (a finished CITING run folder: recipes/citing.py's output_dir)")
    run = Path(run_dir)
    if not run.is_dir():
        raise CitingRunError(f"--citing_run {run}: no such folder")
    rdirs = round_dirs(run)
    if not rdirs:
        raise CitingRunError(f"--citing_run {run}: no round_<k>/ folder, so not a CITING run folder "
                             "(recipes/citing.py's output_dir)")
    if [round_index(d) for d in rdirs] != list(range(len(rdirs))):
        raise CitingRunError(f"--citing_run {run}: rounds {[d.name for d in rdirs]} are not round_0 .. round_{len(rdirs) - 1}")
    if not (run / "final" / "adapter_config.json").is_file():
        raise CitingRunError(f"--citing_run {run}: the run is not finished (no final/adapter_config.json); finish it "
                             "first, so every round's steps are counted")
    rounds, ids, records = [], [], []
    for d in rdirs:
        stats_path = d / TRAIN_STATS_FILE
        if not (d / "summary.json").is_file():
            raise CitingRunError(f"--citing_run {run}: {d.name} is not finished (no summary.json)")
        if not stats_path.is_file():
            raise CitingRunError(
                f"--citing_run {run}: {d.name}/{TRAIN_STATS_FILE} is missing: the run was made before CITING recorded "
                "its optimizer steps; delete its round_*/summary.json and final/ and rerun recipes/citing.py on it "
                "(drafts and revisions are reused, only the rounds' training runs again)")
        stats = json.loads(stats_path.read_text())
        if not isinstance(stats.get("optimizer_steps"), int) or "tokens" not in stats:
            raise CitingRunError(f"--citing_run {run}: {d.name}/{TRAIN_STATS_FILE} lacks optimizer_steps or tokens")
        revs = read_jsonl(d / "revisions.jsonl")
        rounds.append(stats)
        records.append(revs)
        ids.append([r["id"] for r in revs])
    return CitingRecord(run, rounds, ids, records)


def gold_text(row: dict | None) -> str:
    """The gold answer SFT trains on: ``output``, else the first of ``answers``; '' when there is none."""
    if not row:
        return ""
    output = row.get("output")
    if isinstance(output, str) and output.strip():
        return output
    return next(iter(gold_answers(row)), "")


def gold_rows(record: CitingRecord, source_rows: list[dict]) -> tuple[list[dict], dict]:
    """The rounds' instructions (in round order, repeats kept) with their gold answers from ``source_rows``.
    Returns (rows, counts): rows have id, instruction, input, output (the gold) and round; counts say how many
    were trained on by CITING, kept, and skipped for lack of a gold answer (or of the row itself)."""
    by_key: dict[str, dict] = {}
    for row in source_rows:
        by_key.setdefault(row["id"], row)
        by_key.setdefault(text_key(row), row)
    rows, no_gold, not_found = [], 0, 0
    for k, revs in enumerate(record.revision_records):
        for rev in revs:
            row = by_key.get(rev["id"]) or by_key.get(text_key(rev))
            gold = gold_text(row)
            if row is None:
                not_found += 1
            elif not gold.strip():
                no_gold += 1
            else:
                rows.append({"id": rev["id"], "instruction": row["instruction"], "input": row.get("input") or "",
                             "output": gold, "round": k})
    counts = {"citing_trained_rows": sum(len(r) for r in record.revision_records), "gold_rows": len(rows),
              "skipped_no_gold": no_gold, "skipped_not_found": not_found,
              "distinct_instructions": len({r["id"] for r in rows})}
    if not rows:
        raise DataError(f"--citing_run {record.run}: none of the {counts['citing_trained_rows']} rows its rounds "
                        f"trained on has a gold answer ({no_gold} without gold, {not_found} not found); sft_more has "
                        "nothing to train on")
    return rows, counts


def matched_args(args: SFTMoreConfig, record: CitingRecord) -> SFTMoreConfig:
    """``args`` with max_steps = CITING's total steps (and, with ``match_batch``, CITING's batch settings)."""
    total = record.steps
    if total < 1:
        raise CitingRunError(f"--citing_run {record.run}: its rounds took {total} optimizer steps; nothing to match")
    if args.max_steps > 0 and args.max_steps != total:
        raise ConfigError(f"--max_steps is set from the CITING run ({total} optimizer steps); leave it unset, got "
                          f"{args.max_steps}", flag="max_steps")
    changes: dict = {"max_steps": total}
    if args.match_batch:
        settings = {(r["per_device_train_batch_size"], r["gradient_accumulation_steps"]) for r in record.rounds}
        if len(settings) > 1:
            logger.warning("CITING's rounds used different batch settings %s; taking round 0's", sorted(settings))
        batch, accum = record.rounds[0]["per_device_train_batch_size"], record.rounds[0]["gradient_accumulation_steps"]
        changes.update(per_device_train_batch_size=batch, gradient_accumulation_steps=accum)
    return dataclasses.replace(args, **changes)


def run_sft_more(args: SFTMoreConfig, model_args, citing_run: str | Path, sft_adapter: str | None = None,
                 dataset_rows: list[dict] | None = None) -> Path:
    """Train the control into ``args.output_dir`` (see the module docstring); returns that folder. ``sft_adapter``
    defaults to the run's ``sft/``; ``dataset_rows`` are needed with ``gold_from='dataset'``."""
    record = read_citing_run(citing_run)  # checked before anything loads, also on a rerun
    if not sft_adapter:
        if not (record.run / "sft" / "adapter_config.json").is_file():
            raise ConfigError(f"--sft_adapter is unset and --citing_run {record.run} has no sft/ adapter (it was given "
                              "one with --sft_adapter): pass the same adapter", flag="sft_adapter")
        sft_adapter = str(record.run / "sft")
    out = Path(args.output_dir)

    def work() -> dict:
        t0 = time.time()
        if args.gold_from == "dataset":
            if dataset_rows is None:
                raise ConfigError("--gold_from dataset needs the --dataset rows", flag="gold_from")
            source = dataset_rows
        else:
            if not (record.run / "instructions.jsonl").is_file():
                raise CitingRunError(f"--citing_run {record.run}: no instructions.jsonl (the curriculum rows with "
                                     "their gold answers); use --gold_from dataset with the run's --dataset")
            source = read_jsonl(record.run / "instructions.jsonl")
        rows, counts = gold_rows(record, source)
        if counts["skipped_no_gold"] or counts["skipped_not_found"]:
            logger.warning("sft_more: skipped %d rows without a gold answer and %d not found among the instructions",
                           counts["skipped_no_gold"], counts["skipped_not_found"])
        targs = matched_args(args, record)
        model, tokenizer, peft_config = load_policy(model_args, sft_adapter)
        data = to_prompt_completion(datasets.Dataset.from_list(
            [{k: r[k] for k in ("instruction", "input", "output")} for r in rows]))
        trainer = SFTMoreTrainer(model=model, args=targs, train_dataset=data, processing_class=tokenizer,
                                 peft_config=peft_config)
        check_engine(trainer.accelerator)
        trainer.train()
        mine = train_stats(trainer)
        if mine["optimizer_steps"] != record.steps:
            raise RuntimeError(f"sft_more took {mine['optimizer_steps']} optimizer steps, CITING {record.steps}")
        save_adapter(trainer, out)
        citing_rows_per_step = [r["rows_per_step"] for r in record.rounds]
        stats = {
            "citing_run": str(record.run), "sft_adapter": str(sft_adapter), "gold_from": args.gold_from,
            "steps_matched": mine["optimizer_steps"] == record.steps,
            "optimizer_steps": mine["optimizer_steps"], "citing_optimizer_steps": record.steps,
            "citing_steps_per_round": [r["optimizer_steps"] for r in record.rounds],
            "rows": {**counts, "training_set": mine["rows"], "epochs": mine["epochs"]},
            "rows_per_step": {"sft_more": mine["rows_per_step"], "citing": citing_rows_per_step,
                              "matched": all(n == mine["rows_per_step"] for n in citing_rows_per_step)},
            "tokens": {"sft_more": mine["tokens"], "citing": record.tokens(),
                       "citing_per_round": [r["tokens"] for r in record.rounds]},
            "wall_s": round(time.time() - t0, 1),
        }
        if trainer.accelerator.is_main_process:
            (out / "stats.json").write_text(json.dumps(stats, indent=2))
        logger.info("sft_more: %d optimizer steps (CITING: %s), tokens %s (CITING: %s)", stats["optimizer_steps"],
                    stats["citing_steps_per_round"], stats["tokens"]["sft_more"], stats["tokens"]["citing"])
        del trainer, model
        free_memory()
        return {"optimizer_steps": stats["optimizer_steps"], "wall_s": stats["wall_s"]}

    run_stage(out / "done", work, name="sft_more")
    return out
