"""What the revision benchmarks share: their common flags, the rows with matched criteria, and the student's
drafts r(0) that every teacher setting then revises (bench_revision_decoding.py, bench_best_of_k.py)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def add_common_args(ap: argparse.ArgumentParser, student_max_tokens: int, teacher_max_tokens: int) -> None:
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--split", default="train")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    ap.add_argument("--adapter", default=None, help="student SFT adapter (default: the base model answers)")
    ap.add_argument("--student-max-tokens", type=int, default=student_max_tokens)
    ap.add_argument("--teacher-max-tokens", type=int, default=teacher_max_tokens)
    ap.add_argument("--reference", action="store_true", help="reference-guided teacher prompt for rows with gold")
    ap.add_argument("--json", default=None, help="also write the table here")


def student_drafts(args, **generation) -> tuple[list[dict], dict[str, str]]:
    """The first ``--n`` rows of ``--dataset`` with their criteria (default rubric, MiniLM matching) and the
    student's greedy answer to each, r(0); ``generation``: extra DecodingConfig fields."""
    from citing_trl.data import load_instructions
    from citing_trl.generation import DecodingConfig, generate
    from citing_trl.models import load_model
    from citing_trl.revision import rollout_prompt
    from citing_trl.rubric import RubricMatcher, assign_criteria, default_rubric, load_embedder

    rows = assign_criteria(load_instructions(args.dataset, split=args.split, limit=args.n, seed=args.seed),
                           RubricMatcher(default_rubric(), load_embedder("sentence-transformers/all-MiniLM-L6-v2")))
    rows = rows.to_list()
    t0 = time.time()
    student, tok = load_model(args.model, adapter=args.adapter)
    gens = generate(student, tok, [rollout_prompt(r, None) for r in rows],
                    DecodingConfig(max_new_tokens=args.student_max_tokens, show_progress=False, **generation))
    del student
    print(f"student r(0) for {len(rows)} rows in {time.time() - t0:.0f}s", flush=True)
    return rows, {r["id"]: g.text for r, g in zip(rows, gens)}
