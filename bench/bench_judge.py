"""Judge calls per compared pair: one joint prompt for all aspects vs one prompt per aspect, both with the
both-orders rule (every pair is judged as (a, b) and as (b, a)).

When the evaluation's `PairwiseJudge` (citing_trl/evaluation/judge.py) is installed, the figures are the
request counts of its teacher, counted on N pairs with a counting teacher (answers are not parsed: with
`max_parse_retries=0` no repair call is made). Without it, they come from the prompt design: joint = 2
calls per pair, per-aspect = 2 x aspects. No thresholds: it prints the figures.

    python bench/bench_judge.py [--pairs 20] [--json judge.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PAPER_ASPECTS = ["articulate", "in-depth", "comprehensive"]  # the paper's GPT-4 evaluation (§4.1)


class CountingTeacher:
    """Stands in for citing_trl.teacher.Teacher: counts requests, answers a fixed text."""

    def __init__(self):
        self.requests = 0

    def complete_detailed(self, requests, **kw):
        from citing_trl.teacher import Completion

        self.requests += len(requests)
        return [Completion('{"verdict": "tie"}', "stop", 0, 0) for _ in requests]

    def complete(self, requests, **kw):
        return [c.text for c in self.complete_detailed(requests, **kw)]

    def complete_samples(self, requests, num_samples, **kw):
        return [[c] * num_samples for c in self.complete_detailed(requests, **kw)]


def measured(pairs: int) -> dict | None:
    try:
        from citing_trl.evaluation.judge import PairwiseJudge
    except ImportError:
        return None
    items = [{"instruction": f"Question {i}?", "input": "", "a": f"answer a {i}", "b": f"answer b {i}"}
             for i in range(pairs)]
    out = {}
    for mode in ("joint", "per_aspect"):
        teacher = CountingTeacher()
        judge = PairwiseJudge(teacher, mode=mode, max_parse_retries=0)
        judge.compare(items)
        out[mode] = teacher.requests / pairs
        out["aspects"] = len(getattr(judge, "aspects", None) or PAPER_ASPECTS)
    out["source"] = "counted: PairwiseJudge requests"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    figures = measured(a.pairs)
    if figures is None:
        n = len(PAPER_ASPECTS)
        figures = {"joint": 2.0, "per_aspect": 2.0 * n, "aspects": n,
                   "source": "prompt design (citing_trl.evaluation.judge not installed)"}
    figures["ratio"] = figures["per_aspect"] / figures["joint"]
    print(f"judge calls per pair ({figures['aspects']} aspects, both orders; {figures['source']}):")
    print(f"  joint      {figures['joint']:.2f}")
    print(f"  per aspect {figures['per_aspect']:.2f}   ({figures['ratio']:.2f}x the joint mode)")
    if a.json:
        a.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
