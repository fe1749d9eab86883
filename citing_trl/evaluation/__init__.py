"""Evaluation: gold-answer metrics (:mod:`.gold`), paired differences between systems (:mod:`.paired`), the
pairwise judge (:mod:`.judge`), Tables 1-2 and Figure 2 (:mod:`.reports`)."""

from citing_trl.evaluation.gold import (
    GOLD_SOURCES,
    fix_break,
    gold_metrics,
    is_correct,
    normalize_answer,
    score_response,
)

__all__ = ["GOLD_SOURCES", "fix_break", "gold_metrics", "is_correct", "normalize_answer", "score_response"]
