"""Which local-teacher decoding settings give usable revisions? Measured, not guessed.

The student (base model, or an SFT adapter) answers N instructions once (greedy, r(0)); then the local teacher
revises those same answers under each decoding setting, with the plain or the reference-guided prompt. For
each setting it prints, side by side: revisions that end with EOS, revisions accepted by the old filter
(truncated and identical ones rejected) and by the current one (``keep_complete_truncated``, ``keep_identical``),
and, for rows with gold answers, revisions that are correct (``citing_trl.evaluation.gold.is_correct``).

    flock /tmp/citing-heavy.lock python bench/bench_revision_decoding.py --dataset demo --n 24 --teacher-max-tokens 160
    flock /tmp/citing-heavy.lock python bench/bench_revision_decoding.py --reference \\
        --dataset "boolq:../shared/data/boolq_dev.jsonl@12+commonsense_qa:../shared/data/commonsenseqa_dev.jsonl@12+nq_open:../shared/data/nq_open_dev.jsonl@12+squad_v2:../shared/data/squad_v2_dev_sample.json@12"

Settings are "penalty/ngram" pairs (``--settings 1.0/0 1.2/0 1.2/4``); 1.0/0 is plain greedy.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _revision import add_common_args, student_drafts


def main():
    ap = argparse.ArgumentParser()
    add_common_args(ap, student_max_tokens=96, teacher_max_tokens=160)
    ap.add_argument("--settings", nargs="+", default=["1.0/0", "1.2/0", "1.0/4", "1.2/4", "1.3/3"])
    args = ap.parse_args()

    from citing_trl.evaluation.gold import GOLD_SOURCES, is_correct
    from citing_trl.models import load_model
    from citing_trl.revision import revision_requests
    from citing_trl.teacher import Teacher, TeacherConfig
    from citing_trl.verification import RevisionSettings, clean_revision, reject_reason

    STRICT = RevisionSettings(keep_identical=False, keep_complete_truncated=False)

    rows, responses = student_drafts(args)
    gold_rows = [r for r in rows if r["source"] in GOLD_SOURCES and r["answers"]]
    student_right = sum(bool(is_correct(r["source"], responses[r["id"]], r["answers"], r["input"])) for r in gold_rows)

    teacher_model, teacher_tok = load_model(args.model)
    table = []
    for setting in args.settings:
        penalty, ngram = setting.split("/")
        config = TeacherConfig(model=f"bench-{args.model}", max_tokens=args.teacher_max_tokens,
                               repetition_penalty=float(penalty), no_repeat_ngram_size=int(ngram))
        teacher = Teacher(config, model=teacher_model, tokenizer=teacher_tok)
        t1 = time.time()
        outs = teacher.complete_detailed(revision_requests(rows, responses, args.reference), desc=f"teacher {setting}")
        seconds = time.time() - t1
        old = now = eos = right = kept_right = 0
        for r, out in zip(rows, outs):
            revision, draft = clean_revision(out.text), responses[r["id"]]
            eos += out.finish_reason == "stop"
            old += reject_reason(r, draft, revision, out.finish_reason, STRICT) is None  # before: identical dropped
            ok = reject_reason(r, draft, revision, out.finish_reason, RevisionSettings()) is None  # today's defaults
            now += ok
            if r in gold_rows:
                correct = bool(is_correct(r["source"], revision, r["answers"], r["input"]))
                right += correct
                kept_right += correct and ok
        table.append({"setting": setting, "rows": len(rows), "ends_with_eos": eos, "accepted_old_filter": old,
                      "accepted_now": now, "gold_rows": len(gold_rows), "revision_correct": right,
                      "accepted_and_correct": kept_right, "student_correct": student_right, "seconds": round(seconds)})
        print(json.dumps(table[-1]), flush=True)
    print(f"\n{'setting':>8} {'EOS':>4} {'old filter':>10} {'now':>5} {'correct':>8} {'kept+correct':>12}  (of {len(rows)} rows, "
          f"{len(gold_rows)} with gold; student r(0) correct {student_right})")
    for t in table:
        print(f"{t['setting']:>8} {t['ends_with_eos']:>4} {t['accepted_old_filter']:>10} {t['accepted_now']:>5} {t['revision_correct']:>8} "
              f"{t['accepted_and_correct']:>12}")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
