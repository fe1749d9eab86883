"""Which teacher sample of each row becomes its training row: format filter, gate, best of K.

:func:`select_revisions` runs every sample of the round through the format filter (:mod:`.format_filter`),
hands the passing ones to the gate in one batch, and keeps each row's best passing sample: first by the
gate's :meth:`~citing_trl.verification.base.Gate.preference` (gold score for the ``gold`` gate, judge or reward
score otherwise), then the shorter revision, then the earlier sample. It also reports how correctness changed
from r(k) to r(k+1) on rows with gold (:func:`fix_break_report`). Gold scores are computed once per text for
the whole selection (:class:`~citing_trl.verification.base.GoldScores`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

from citing_trl.evaluation.gold import fix_break
from citing_trl.verification.base import Candidate, Gate, GoldScores
from citing_trl.verification.format_filter import KEPT_IDENTICAL, KEPT_TRUNCATED, clean_revision, reject_reason
from citing_trl.verification.none import NoGate
from citing_trl.verification.settings import RevisionSettings


class Selection(NamedTuple):
    """What :func:`select_revisions` decided: training records, rejected records (with the reason and the gate's
    verdict), reason counts (they partition the rows) and the report (gate name, ``ungated`` count, fix/break)."""

    accepted: list[dict]
    rejected: list[dict]
    counts: dict[str, int]
    report: dict


def training_record(row: dict, draft: str, revision: str) -> dict:
    """A training record: instruction, input, criteria, r(k), r(k+1). Gold answers are deliberately absent.
    A keep-unchanged row is ``training_record(row, draft, draft)``."""
    return {"id": row["id"], "instruction": row["instruction"], "input": row.get("input") or "",
            "category": row.get("category"), "criteria": row["criteria"], "response": draft, "revision": revision}


def select_revisions(
    rows: Sequence[dict], responses: dict[str, str], samples: Sequence[Sequence], gate: Gate | None = None,
    settings: RevisionSettings | None = None,
) -> Selection:
    """Pick each row's training revision among its teacher samples (``samples[i]``: Completions of row i).

    ``gate``: a :class:`~citing_trl.verification.base.Gate` (None: no gate). ``settings``: the format filter's
    settings (default: :class:`~citing_trl.verification.settings.RevisionSettings`'s defaults).

    Returns a :class:`Selection` ``(accepted, rejected, counts, report)``. ``counts`` partitions the rows:
    ``accepted``, ``kept_identical``, ``kept_truncated`` and one key per rejection reason (format reasons, then
    ``gate_*``). ``report`` has the gate's name, its ``ungated`` count and the fix/break tables.
    """
    gate = NoGate() if gate is None else gate
    settings = settings if settings is not None else RevisionSettings()
    scores = GoldScores()
    per_row: list[list[Candidate]] = []
    format_reasons: list[list[str | None]] = []
    for row, outs in zip(rows, samples):
        draft = responses[row["id"]]
        cands = [Candidate(row, draft, clean_revision(out.text), j, out.finish_reason, out.completion_tokens, scores)
                 for j, out in enumerate(outs)]
        per_row.append(cands)
        format_reasons.append([reject_reason(row, draft, c.revision, c.finish_reason, settings) for c in cands])
    to_gate = [c for cands, reasons in zip(per_row, format_reasons) for c, r in zip(cands, reasons) if r is None]
    verdicts = dict(zip(((c.row["id"], c.sample) for c in to_gate), gate(to_gate)))

    accepted, rejected, counts, ungated = [], [], Counter(), 0
    for row, cands, reasons in zip(rows, per_row, format_reasons):
        passing = [c for c, r in zip(cands, reasons) if r is None and verdicts[(row["id"], c.sample)].keep]
        if passing:
            def rank(c: Candidate, row: dict = row):
                return (*gate.preference(c, verdicts[(row["id"], c.sample)]), -len(c.revision), -c.sample)

            best = max(passing, key=rank)
            verdict = verdicts[(row["id"], best.sample)]
            ungated += verdict.ungated
            if best.identical:
                counts[KEPT_IDENTICAL] += 1
            else:
                counts[KEPT_TRUNCATED if best.finish_reason == "length" and settings.reject_truncated else "accepted"] += 1
            record = training_record(row, best.draft, best.revision)
            if len(cands) > 1:
                record["sample"] = best.sample
            accepted.append(record)
            continue
        first_gated = next((c for c, r in zip(cands, reasons) if r is None), None)
        if first_gated is not None:
            verdict = verdicts[(row["id"], first_gated.sample)]
            reason, shown = verdict.reason or "gate_rejected", first_gated
        else:
            verdict, reason, shown = None, reasons[0] or "empty", cands[0] if cands else None
        record = {**training_record(row, responses[row["id"]], shown.revision if shown else ""), "reason": reason}
        if verdict is not None:
            record["verdict"] = verdict.detail
        if len(cands) > 1:
            record["samples"] = [
                {"revision": c.revision, "reason": r or verdicts[(row["id"], c.sample)].reason,
                 **({"verdict": verdicts[(row["id"], c.sample)].detail} if r is None else {})}
                for c, r in zip(cands, reasons)
            ]
        counts[reason] += 1
        rejected.append(record)
    proposed = [cands[0].revision if cands else "" for cands in per_row]
    report = {"gate": gate.name, "ungated": ungated,
              "fix_break": fix_break_report(rows, responses, proposed, accepted, scores)}
    return Selection(accepted, rejected, dict(counts), report)


def fix_break_report(rows: Sequence[dict], responses: dict[str, str], proposed: Sequence[str],
                     accepted: Sequence[dict], scores: GoldScores | None = None) -> dict:
    """How correctness changed from r(k) to r(k+1), on rows with gold (C1 ``fix_break``):

    ``proposed``: every row, r(k) against the teacher's first sample, before the format filter and the gate;
    ``kept``: the trained rows, r(k) against the kept revision. ``scores``: the selection's gold scores, so no
    text is scored twice.
    """
    right = (scores if scores is not None else GoldScores()).is_right
    by_id = {r["id"]: r for r in rows}
    before = [right(r, responses[r["id"]]) for r in rows]
    after = [right(r, text) for r, text in zip(rows, proposed)]
    kept_before = [right(by_id[a["id"]], a["response"]) for a in accepted]
    kept_after = [right(by_id[a["id"]], a["revision"]) for a in accepted]
    return {"proposed": fix_break(before, after), "kept": fix_break(kept_before, kept_after)}
