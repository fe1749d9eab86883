"""The ``none`` gate: every revision that passes the format filter is trained on (the paper's behaviour)."""

from __future__ import annotations

from collections.abc import Sequence

from citing_trl.verification.base import Candidate, Gate, Verdict, register_gate


@register_gate
class NoGate(Gate):
    name = "none"
    help = "no check behind the format filter (the paper's behaviour)"

    def check(self, candidates: Sequence[Candidate]) -> list[Verdict]:
        return [Verdict(True) for _ in candidates]

