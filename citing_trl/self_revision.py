"""Inference with self-revision (Algorithm 1 lines 12-15).

For each instruction the criteria c come from rubric matching (Eq. 1-2); the fine-tuned student writes
r(0), then revises its own answer M times with the same prompt pr(x, c, r(j)) it was trained on. Every
r(j) is saved, so CITING@j can be judged against CITING@j-1. Each step is written to disk as it is
generated; rerunning continues where an interrupted run stopped.

The result is an answers file (``answers.jsonl``, the format ``recipes/evaluate.py`` reads): one row per
instruction with ``id, source, instruction, input, answers`` (gold list, may be empty), ``response`` (the
final answer r(M)) and ``responses`` [r(0), ..., r(M)], plus ``category``/``criteria`` when M > 0. With
M = 0 the rows are plain answers and no rubric or criteria are needed, so the base model alone, an SFT
adapter or a CITING adapter can answer the same way.

Under a launcher (``accelerate launch --num_processes N``) the rows are sharded: rank r answers rows r, r+N,
r+2N, ... into its own part file ``step_<j>.rank<r>.jsonl`` (appended batch by batch), and once every rank is
done rank 0 joins the parts, in input order, into ``step_<j>.jsonl`` and removes them; every rank then reads
r(j) back to build the prompts of step j+1 (the one shard scheme of :mod:`citing_trl.run_layout`). One process
goes the same way with one part, so the files are the
same whatever the process count. A killed run resumes from the joined files and whatever parts are on disk
(written by any process count); nothing finished is generated again. Greedy answers match a one-process run
up to floating-point differences between batch shapes (each rank batches its own rows).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from citing_trl.citing_config import RevisionStyleArguments
from citing_trl.configs import prefixed
from citing_trl.distributed import on_main
from citing_trl.errors import ConfigError, DataError, check
from citing_trl.generation import DecodingConfig
from citing_trl.jsonl import read_jsonl, write_jsonl
from citing_trl.revision import student_rollouts
from citing_trl.rubric import Rubric, RubricMatcher, assign_criteria, default_rubric, load_embedder
from citing_trl.run_layout import join_shards, read_shards, shard_path


@dataclass
class InferenceArguments(RevisionStyleArguments):
    """Settings of the self-revision inference recipe; decoding is :data:`AnswerGenerationArguments`."""

    model_name_or_path: str = field(
        default="HuggingFaceTB/SmolLM2-135M-Instruct", metadata={"help": "Base model of the student (id or path)."}
    )
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter of the trained student (e.g. <run>/final)."})
    rubric_path: str | None = field(
        default=None, metadata={"help": "rubric.json to match criteria from; default: the built-in rubric."}
    )
    num_revisions: int = field(
        default=2,
        metadata={"help": "M: how many times the student revises its own answer; 0 = plain answers (no rubric)."},
    )
    output_dir: str = field(
        default="outputs/infer", metadata={"help": "Where step_<j>.jsonl and answers.jsonl (the answers file) go."}
    )

    def __post_init__(self):
        check(self.num_revisions >= 0, "num_revisions", "must be >= 0", self.num_revisions)
        super().__post_init__()


# How the student answers: DecodingConfig's own flags, unprefixed (--max_new_tokens, --batch_size, ...)
AnswerGenerationArguments = prefixed(
    DecodingConfig, "", name="AnswerGenerationArguments",
    only=("max_new_tokens", "batch_size", "repetition_penalty", "no_repeat_ngram_size", "seed", "backend",
          "vllm_adapter_mode", "vllm_dtype", "vllm_enforce_eager"),
)


ANSWERS_FILE = "answers.jsonl"


class _OneProcess:
    """The process state of a run without a launcher (what :class:`accelerate.PartialState` would say)."""

    process_index, num_processes, is_main_process = 0, 1, True

    def wait_for_everyone(self) -> None:
        pass


def step_path(output_dir: str | Path, j: int) -> Path:
    """r(j) of every row, in input order: ``step_<j>.jsonl``."""
    return Path(output_dir) / f"step_{j}.jsonl"


def self_revise(model, tokenizer, rows: list[dict], num_revisions: int, gen_config: DecodingConfig,
                output_dir: str | Path, state=None, prompt_style: str = "improve") -> list[dict]:
    """rows need id, instruction, input and, when ``num_revisions`` > 0, criteria. Writes and returns the
    answers rows (see the module docstring) with ``responses`` = [r(0), ..., r(M)].

    ``state`` (an :class:`accelerate.PartialState`, default: one process) shards the rows across ranks; every
    rank returns every row."""
    if num_revisions < 0:
        raise ConfigError(f"--num_revisions must be >= 0, got {num_revisions}", flag="num_revisions")
    if num_revisions > 0:
        for r in rows:
            if not r.get("criteria"):
                raise DataError(f"row {r.get('id')!r}: self-revision needs criteria (run rubric matching first)")
    state = state if state is not None else _OneProcess()
    rank, world = state.process_index, state.num_processes
    gen_config = dataclasses.replace(gen_config, show_progress=gen_config.show_progress and state.is_main_process)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = [r["id"] for r in rows]
    previous = None
    steps = []
    for j in range(num_revisions + 1):
        joined = read_jsonl(step_path(out, j))
        if [r["id"] for r in joined] != ids:  # step j is not finished (or was written another way): (re)join it
            desc = "student answers r(0)" if j == 0 else f"self-revision r({j})"
            student_rollouts(model, tokenizer, rows, shard_path(step_path(out, j), rank), gen_config,
                             previous=previous, rank=rank, world_size=world, desc=desc,
                             done=read_shards(step_path(out, j)), prompt_style=prompt_style)
            state.wait_for_everyone()
            on_main(lambda j=j: join_shards(step_path(out, j), ids), state)
            joined = read_jsonl(step_path(out, j))
        previous = {rec["id"]: rec["response"] for rec in joined}
        steps.append(previous)
    results = []
    for r in rows:
        responses = [step[r["id"]] for step in steps]
        row = {"id": r["id"], "source": r.get("source") or "", "instruction": r["instruction"],
               "input": r.get("input") or "", "answers": list(r.get("answers") or []), "response": responses[-1],
               "responses": responses}
        if num_revisions > 0:
            row |= {"category": r.get("category"), "criteria": r["criteria"]}
        results.append(row)
    on_main(lambda: write_jsonl(out / ANSWERS_FILE, results), state)
    return results


def check_output_dir(output_dir: str | Path, settings: dict) -> None:
    """Resume only a run made with the same model, adapter, data and decoding: ``run_settings.json`` in the
    output folder records them, and a different run there is refused with one clear line (its step files
    would otherwise be reused as if they were this model's answers)."""
    out = Path(output_dir)
    path = out / "run_settings.json"
    if path.exists():
        old = json.loads(path.read_text())
        changed = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v and k != "num_revisions"}
        if changed:
            what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise ConfigError(f"{out} holds answers of a different run ({what}); use another --output_dir",
                              flag="output_dir")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def match_rows(dataset, rubric_path: str | None, embedding_model: str) -> list[dict]:
    """Attach category + criteria to every row by rubric matching."""

    rubric = Rubric.load(rubric_path) if rubric_path else default_rubric()
    matcher = RubricMatcher(rubric, load_embedder(embedding_model))
    return assign_criteria(dataset, matcher).to_list()
