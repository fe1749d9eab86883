"""The ``judge`` gate: keep r(k+1) only if the pairwise judge prefers it to r(k).

The judge is :class:`citing_trl.evaluation.judge.PairwiseJudge` on the run's teacher (same cache and ledger).
It is asked with a = revision, b = draft and applies its both-orders rule, so an order-dependent verdict is a
tie. The revision is kept when the judge prefers it on more aspects than it prefers the draft (with one
aspect: a win); the margin of aspects ranks a row's passing samples. A revision identical to the draft passes
unasked: a judge cannot prefer a text to itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from citing_trl.evaluation.judge import PairwiseJudge
from citing_trl.verification.base import Candidate, Gate, Verdict, register_gate


@register_gate
class JudgeGate(Gate):
    name = "judge"
    help = "the pairwise judge prefers the revision to the draft in both orders"

    def __init__(self, judge):
        self.judge = judge

    @classmethod
    def build(cls, *, teacher=None, judge=None) -> JudgeGate:
        return cls(judge if judge is not None else PairwiseJudge(teacher))

    def check(self, candidates: Sequence[Candidate]) -> list[Verdict]:
        asked = [i for i, c in enumerate(candidates) if not c.identical]
        items = [{"instruction": candidates[i].row["instruction"], "input": candidates[i].row.get("input") or "",
                  "a": candidates[i].revision, "b": candidates[i].draft} for i in asked]
        results = self.judge.compare(items) if items else []
        verdicts = [Verdict(True, ungated=True, detail={"judge": "identical"}) for _ in candidates]
        for i, result in zip(asked, results):
            values = list(result.values())
            wins, losses = values.count("a"), values.count("b")
            detail = {"judge": dict(result)}
            if wins > losses:
                verdicts[i] = Verdict(True, score=float(wins - losses), detail=detail)
            else:
                unparsed = bool(values) and all(v == "unparsed" for v in values)
                verdicts[i] = Verdict(False, "gate_unparsed" if unparsed else "gate_not_better",
                                      score=float(wins - losses), detail=detail)
        return verdicts
