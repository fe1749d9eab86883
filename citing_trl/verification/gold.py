"""The ``gold`` gate: on rows with gold answers, keep r(k+1) only if it is right and not worse than r(k).

Right means correct under the row's source's primary gold metric (:func:`citing_trl.evaluation.gold.primary_metric`:
``accuracy`` of the extracted yes/no or option for boolq/piqa/openbookqa/commonsense_qa; ``answer_in_response``
for nq_open/trivia_qa/squad_v2/quac, no-answer handled). Not worse compares (primary metric, F1) for open QA and
(accuracy, answered) for choice sets. Rows without gold pass ungated and are counted (``ungated``). A revision
identical to the draft is checked too: a kept wrong answer is rejected. Among a row's passing samples the one
with the higher gold score wins. The gold answer is read from the row for the check only; it never reaches a
training record.
"""

from __future__ import annotations

from collections.abc import Sequence

from citing_trl.verification.base import Candidate, Gate, Verdict, register_gate


@register_gate
class GoldGate(Gate):
    name = "gold"
    help = "correct under its source's gold metric and not worse than the draft (rows with gold answers)"

    def check(self, candidates: Sequence[Candidate]) -> list[Verdict]:
        verdicts = []
        for c in candidates:
            revised = c.gold
            if revised is None:
                verdicts.append(Verdict(True, ungated=True, detail={"gold": "none"}))
                continue
            draft = c.draft_gold
            detail = {"gold_revision": list(revised), "gold_draft": list(draft)}
            if revised[0] < 1.0:
                verdicts.append(Verdict(False, "gate_wrong", detail=detail))
            elif revised < draft:
                verdicts.append(Verdict(False, "gate_worse", detail=detail))
            else:
                verdicts.append(Verdict(True, detail=detail))
        return verdicts

    def preference(self, candidate: Candidate, verdict: Verdict) -> tuple:
        return (candidate.gold or (0.0, 0.0), *super().preference(candidate, verdict))

