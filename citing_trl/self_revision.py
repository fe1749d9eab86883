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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from citing_trl.cli import check, check_choice
from citing_trl.configs import prefixed
from citing_trl.errors import ConfigError
from citing_trl.generation import GenerationConfig
from citing_trl.jsonl import write_jsonl
from citing_trl.prompts import REVISION_HEADERS
from citing_trl.revision import student_rollouts
from citing_trl.rubric import Rubric, RubricMatcher, assign_criteria, default_rubric, load_embedder


@dataclass
class InferenceArguments:
    """Settings of the self-revision inference recipe; decoding is :data:`AnswerGenerationArguments`."""

    model_name_or_path: str = field(
        default="HuggingFaceTB/SmolLM2-135M-Instruct", metadata={"help": "Base model of the student (id or path)."}
    )
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter of the trained student (e.g. <run>/final)."})
    rubric_path: str | None = field(
        default=None, metadata={"help": "rubric.json to match criteria from; default: the built-in rubric."}
    )
    embedding_model: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2", metadata={"help": "sentence-BERT model for matching."}
    )
    num_revisions: int = field(
        default=2,
        metadata={"help": "M: how many times the student revises its own answer; 0 = plain answers (no rubric)."},
    )
    revision_prompt: str = field(
        default="improve",
        metadata={"help": "Header of the self-revision prompt: the one the student was trained with (its run's "
                  "--revision_prompt, recorded in the adapter's model card): 'improve' or 'keep_right'."},
    )
    output_dir: str = field(
        default="outputs/infer", metadata={"help": "Where step_<j>.jsonl and answers.jsonl (the answers file) go."}
    )

    def __post_init__(self):
        check(self.num_revisions >= 0, "num_revisions", "must be >= 0", self.num_revisions)
        check_choice("revision_prompt", self.revision_prompt, tuple(REVISION_HEADERS))


# How the student answers: GenerationConfig's own flags, unprefixed (--max_new_tokens, --batch_size, ...)
AnswerGenerationArguments = prefixed(
    GenerationConfig, "", name="AnswerGenerationArguments",
    only=("max_new_tokens", "batch_size", "repetition_penalty", "no_repeat_ngram_size", "seed"),
)


ANSWERS_FILE = "answers.jsonl"


def self_revise(model, tokenizer, rows: list[dict], num_revisions: int, gen_config: GenerationConfig,
                output_dir: str | Path, prompt_style: str = "improve") -> list[dict]:
    """rows need id, instruction, input and, when ``num_revisions`` > 0, criteria. Writes and returns the
    answers rows (see the module docstring) with ``responses`` = [r(0), ..., r(M)]."""
    if num_revisions < 0:
        raise ValueError(f"num_revisions must be >= 0, got {num_revisions}")
    if num_revisions > 0:
        for r in rows:
            if not r.get("criteria"):
                raise ValueError(f"row {r.get('id')!r}: self-revision needs criteria (run rubric matching first)")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    previous = None
    steps = []
    for j in range(num_revisions + 1):
        desc = "student answers r(0)" if j == 0 else f"self-revision r({j})"
        done = student_rollouts(model, tokenizer, rows, out / f"step_{j}.jsonl", gen_config, previous=previous, desc=desc,
                                prompt_style=prompt_style)
        previous = {i: rec["response"] for i, rec in done.items()}
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
    write_jsonl(out / ANSWERS_FILE, results)
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
