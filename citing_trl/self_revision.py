"""Inference with self-revision (Algorithm 1 lines 12-15).

For each instruction the criteria c come from rubric matching (Eq. 1-2); the fine-tuned student writes
r(0), then revises its own answer M times with the same prompt pr(x, c, r(j)) it was trained on. Every
r(j) is saved, so CITING@j can be judged against CITING@j-1. Each step is written to disk as it is
generated; rerunning continues where an interrupted run stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from citing_trl.generation import GenerationConfig
from citing_trl.revision import student_rollouts, write_jsonl


@dataclass
class InferenceArguments:
    """Settings of the self-revision inference recipe."""

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
    num_revisions: int = field(default=2, metadata={"help": "M: how many times the student revises its own answer."})
    max_new_tokens: int = field(default=256, metadata={"help": "Token budget per answer (paper: 512)."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generation batch."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "Penalty on tokens the answer already holds (1.0 = off)."})
    no_repeat_ngram_size: int = field(default=0, metadata={"help": "Never repeat an n-gram of this size in an answer (0 = off)."})
    output_dir: str = field(default="outputs/infer", metadata={"help": "Where step_<j>.jsonl and responses.jsonl go."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling (greedy decoding ignores it)."})


def self_revise(model, tokenizer, rows: list[dict], num_revisions: int, gen_config: GenerationConfig,
                output_dir: str | Path) -> list[dict]:
    """rows need id, instruction, input, criteria. Returns rows with ``responses`` = [r(0), ..., r(M)]."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    previous = None
    steps = []
    for j in range(num_revisions + 1):
        desc = "student answers r(0)" if j == 0 else f"self-revision r({j})"
        done = student_rollouts(model, tokenizer, rows, out / f"step_{j}.jsonl", gen_config, previous=previous, desc=desc)
        previous = {i: rec["response"] for i, rec in done.items()}
        steps.append(previous)
    results = [
        {"id": r["id"], "instruction": r["instruction"], "input": r.get("input") or "", "category": r.get("category"),
         "criteria": r["criteria"], "responses": [step[r["id"]] for step in steps]}
        for r in rows
    ]
    write_jsonl(out / "responses.jsonl", results)
    return results


def match_rows(dataset, rubric_path: str | None, embedding_model: str) -> list[dict]:
    """Attach category + criteria to every row by rubric matching."""
    from citing_trl.rubric_design import Rubric, default_rubric
    from citing_trl.rubric_matching import RubricMatcher, assign_criteria, load_embedder

    rubric = Rubric.load(rubric_path) if rubric_path else default_rubric()
    matcher = RubricMatcher(rubric, load_embedder(embedding_model))
    return assign_criteria(dataset, matcher).to_list()
