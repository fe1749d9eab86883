"""Verified revisions: which teacher revision of a row becomes a training row (Algorithm 1 line 9, checked).

CITING trains on every teacher revision that passes a format filter (:mod:`.format_filter`: not empty, not an
echo of the prompt, not cut off). Behind that filter a *gate* may check each revision r(k+1) against the draft
r(k) it revises, and with K teacher samples per row the best passing one is kept (:mod:`.selection`).

``--revision_gate`` (one class per file, all in the registry :data:`GATES` of :mod:`.base`):

    ``none``   (:mod:`.none`)   no check: the paper's behaviour.
    ``gold``   (:mod:`.gold`)   right under its source's gold metric and not worse than the draft; rows without
                                gold pass ungated and are counted.
    ``judge``  (:mod:`.judge`)  the pairwise judge (the same teacher, cache and ledger) prefers it to the draft
                                after its both-orders rule.
    ``reward`` (:mod:`.reward`) the reward model (:class:`citing_trl.reward.RewardScorer`) scores it above the
                                draft by more than ``gate_margin``.

A revision identical to the draft (kept by ``keep_identical``) is still checked by the ``gold`` gate (a kept
wrong answer is rejected) but passes ``judge`` and ``reward`` unasked: neither can prefer a text to itself.
A new gate is one class in one file, registered with :func:`register_gate` (see :mod:`.base`); importing its
module makes it a ``--revision_gate`` choice. The gold answer is read from the row for the gate only; it is
never put into a training record.
"""

from citing_trl.verification.base import (
    GATES,
    Candidate,
    Gate,
    GoldScores,
    Verdict,
    gate_label,
    gate_names,
    gold_score,
    is_identical,
    make_gate,
    register_gate,
)
from citing_trl.verification.format_filter import (
    KEPT_IDENTICAL,
    KEPT_TRUNCATED,
    REJECT_REASONS,
    clean_revision,
    ends_complete_sentence,
    reject_reason,
)
from citing_trl.verification.gold import GoldGate
from citing_trl.verification.judge import JudgeGate

# the built-in gates (registered in settings.BUILT_IN_GATES order, which --revision_gate lists)
from citing_trl.verification.none import NoGate
from citing_trl.verification.report import FIX_BREAK_KEYS, per_kept_row, print_fix_break, print_round_report
from citing_trl.verification.reward import RewardGate
from citing_trl.verification.selection import Selection, fix_break_report, select_revisions
from citing_trl.verification.settings import RevisionSettings, gates_help

__all__ = [
    "FIX_BREAK_KEYS", "GATES", "KEPT_IDENTICAL", "KEPT_TRUNCATED", "REJECT_REASONS", "Candidate", "Gate", "GoldGate",
    "GoldScores", "JudgeGate", "NoGate", "RevisionSettings", "RewardGate", "Selection", "Verdict", "clean_revision",
    "ends_complete_sentence", "fix_break_report", "gate_label", "gate_names", "gates_help", "gold_score",
    "is_identical", "make_gate", "per_kept_row", "print_fix_break", "print_round_report", "register_gate",
    "reject_reason", "select_revisions",
]
