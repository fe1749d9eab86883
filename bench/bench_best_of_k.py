"""Best-of-K teacher samples under a revision gate: kept rows per minute of teacher time, measured per K.

The student (an SFT adapter, or the base model) answers N instructions once (greedy, r(0)); then the local
teacher revises those same drafts with K samples per row for each K in ``--ks`` (K = 1 greedy; K > 1 sampled at
``--temperature``, sample j drawn with seed j), and :func:`citing_trl.verification.select_revisions` picks each
row's revision through the format filter and the gate, exactly as a CITING round does. For each K it prints the
kept rows, the fix/break counts of the kept set (wrong→right is what the gate is for), teacher seconds and kept
rows per teacher minute. The K that maximises kept rows per minute is the one a config should use.

    python bench/bench_best_of_k.py --reference --gate gold --ks 1 2 4 --adapter outputs/citing_qa_demo/sft \\
        --dataset "boolq:../shared/data/boolq_dev.jsonl@20+commonsense_qa:../shared/data/commonsenseqa_dev.jsonl@20+nq_open:../shared/data/nq_open_dev.jsonl@20+squad_v2:../shared/data/squad_v2_dev_sample.json@20"

No thresholds: this prints figures, it does not pass or fail.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _revision import add_common_args, student_drafts


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap, student_max_tokens=64, teacher_max_tokens=128)
    ap.add_argument("--repetition-penalty", type=float, default=1.2)
    ap.add_argument("--no-repeat-ngram-size", type=int, default=4)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--temperature", type=float, default=0.7, help="teacher temperature for K > 1")
    ap.add_argument("--gate", default="gold", choices=["none", "gold"])
    args = ap.parse_args()

    from citing_trl.models import load_model
    from citing_trl.revision import revision_requests
    from citing_trl.teacher import Teacher, TeacherConfig
    from citing_trl.verification import RevisionSettings, make_gate, select_revisions

    rows, responses = student_drafts(args, batch_size=8, repetition_penalty=args.repetition_penalty,
                                     no_repeat_ngram_size=args.no_repeat_ngram_size)

    teacher_model, teacher_tok = load_model(args.model)
    requests = revision_requests(rows, responses, args.reference)
    gate = make_gate(args.gate)
    table = []
    for k in args.ks:
        temperature = 0.0 if k == 1 else args.temperature
        config = TeacherConfig(model=f"bench-{args.model}", max_tokens=args.teacher_max_tokens, temperature=temperature,
                               repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size)
        teacher = Teacher(config, model=teacher_model, tokenizer=teacher_tok)
        t1 = time.time()
        samples = teacher.complete_samples(requests, k, desc=f"teacher K={k}")
        seconds = time.time() - t1
        accepted, _, counts, report = select_revisions(rows, responses, samples, gate, RevisionSettings(
            keep_identical=True, keep_complete_truncated=True))
        kept_fb = report["fix_break"]["kept"]
        table.append({"k": k, "temperature": temperature, "rows": len(rows), "kept": len(accepted),
                      "counts": counts, "kept_fix_break": kept_fb, "teacher_s": round(seconds, 1),
                      "kept_per_min": round(len(accepted) / seconds * 60, 2) if seconds else None,
                      "completion_tokens": sum(c.completion_tokens for s in samples for c in s)})
        print(json.dumps(table[-1]), flush=True)
    print(f"\n{'K':>3} {'T':>4} {'kept':>5} {'w->r':>5} {'r->r':>5} {'teacher s':>10} {'kept/min':>9}   "
          f"(of {len(rows)} rows, gate {args.gate}, reference {args.reference})")
    for t in table:
        fb = t["kept_fix_break"]
        print(f"{t['k']:>3} {t['temperature']:>4} {t['kept']:>5} {fb.get('wrong_to_right', 0):>5} "
              f"{fb.get('right_to_right', 0):>5} {t['teacher_s']:>10} {t['kept_per_min']:>9}")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
