"""Verified revisions: which teacher revision of a row becomes a training row (Algorithm 1 line 9, checked).

CITING trains on every teacher revision that passes the format filter of :mod:`citing_trl.revision`. This
module adds a *gate* behind that filter and picks among several teacher samples:

``revision_gate``
    ``none``   no check (the paper's behaviour).
    ``gold``   rows with gold answers (a source of :data:`citing_trl.evaluation.gold.GOLD_SOURCES`): keep r(k+1)
               only if it is correct under its source's primary gold metric (``accuracy`` of the extracted
               yes/no or option for boolq/piqa/openbookqa/commonsense_qa; ``answer_in_response`` for
               nq_open/trivia_qa/squad_v2/quac, no-answer handled) and it does not score below the draft r(k)
               (compared on (primary metric, F1) for open QA, (accuracy, answered) for choice sets). Rows
               without gold pass ungated and are counted (``ungated``).
    ``judge``  keep r(k+1) only if the pairwise judge (:class:`citing_trl.evaluation.judge.PairwiseJudge`, the
               same teacher, cache and ledger) prefers it to r(k) after its both-orders rule: on more aspects
               than it prefers r(k) (a flip between the two orders is a tie; with one aspect: a win).
    ``reward`` keep r(k+1) only if the reward model (:class:`citing_trl.baselines.reward_model.RewardScorer`)
               scores it above r(k) by more than ``gate_margin``.

A revision identical to the draft (kept by ``keep_identical``) is still checked by the ``gold`` gate (a kept
wrong answer is rejected) but passes ``judge`` and ``reward`` unasked: neither can prefer a text to itself.

Each gate is a callable ``gate(candidates) -> verdicts`` over a whole round (one judge / reward batch).
With K teacher samples per row, the kept one is the best passing sample: highest gold score (``gold`` gate
only), then highest judge/reward score, then the shortest. The gold answer is read from the row for the gate
only; it is never put into a training record.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from citing_trl.prompts import instruction_messages
from citing_trl.revision import KEPT_IDENTICAL, KEPT_TRUNCATED, clean_revision, is_identical, reject_reason

logger = logging.getLogger(__name__)

GATE_MODES = ("none", "gold", "judge", "reward")
GATE_REASONS = ("gate_wrong", "gate_worse", "gate_not_better", "gate_unparsed")
FIX_BREAK_KEYS = ("wrong_to_right", "right_to_wrong", "right_to_right", "wrong_to_wrong", "no_gold")


@dataclass
class Candidate:
    """One teacher sample r(k+1) for one row, with the draft r(k) it revises."""

    row: dict
    draft: str
    revision: str
    sample: int = 0
    finish_reason: str | None = None
    completion_tokens: int = 0

    @property
    def identical(self) -> bool:
        return is_identical(self.draft, self.revision)


@dataclass
class Verdict:
    """A gate's decision on one candidate: ``keep``; ``reason`` (why not); ``score`` (judge/reward score, used to
    rank passing samples); ``ungated`` (passed without a check); ``detail`` (written to rejected.jsonl)."""

    keep: bool
    reason: str | None = None
    score: float | None = None
    ungated: bool = False
    detail: dict = field(default_factory=dict)


Gate = Callable[[Sequence[Candidate]], list[Verdict]]


# --------------------------------------------------------------------------------------------------
# Gold scores
# --------------------------------------------------------------------------------------------------


def gold_score(row: dict, text: str) -> tuple[float, float] | None:
    """(primary metric, secondary metric) of ``text`` against the row's gold answers; None without gold.
    Primary: ``accuracy`` or ``answer_in_response`` (as C1's ``is_correct``); secondary: ``f1`` or ``answered``."""
    from citing_trl.evaluation.gold import primary_metric, score_response

    scores = score_response(row.get("source") or "", text, row.get("answers") or [], row.get("input") or "")
    if not scores:
        return None
    primary = scores[primary_metric(scores)]
    return (primary, scores.get("f1", scores.get("answered", 0.0)))


def is_right(row: dict, text: str) -> bool | None:
    from citing_trl.evaluation.gold import is_correct

    return is_correct(row.get("source") or "", text, row.get("answers") or [], row.get("input") or "")


# --------------------------------------------------------------------------------------------------
# The gates: one small function per mode
# --------------------------------------------------------------------------------------------------


def no_gate(candidates: Sequence[Candidate]) -> list[Verdict]:
    return [Verdict(True) for _ in candidates]


def gold_gate(candidates: Sequence[Candidate]) -> list[Verdict]:
    verdicts = []
    for c in candidates:
        revised = gold_score(c.row, c.revision)
        if revised is None:
            verdicts.append(Verdict(True, ungated=True, detail={"gold": "none"}))
            continue
        draft = gold_score(c.row, c.draft)
        detail = {"gold_revision": list(revised), "gold_draft": list(draft)}
        if revised[0] < 1.0:
            verdicts.append(Verdict(False, "gate_wrong", detail=detail))
        elif revised < draft:
            verdicts.append(Verdict(False, "gate_worse", detail=detail))
        else:
            verdicts.append(Verdict(True, detail=detail))
    return verdicts


class JudgeGate:
    """Keep r(k+1) when the pairwise judge prefers it to r(k) (a = revision, b = draft) on more aspects than
    it prefers r(k); the judge applies its both-orders rule, so an order-dependent verdict is a tie."""

    def __init__(self, judge):
        self.judge = judge

    def __call__(self, candidates: Sequence[Candidate]) -> list[Verdict]:
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


class RewardGate:
    """Keep r(k+1) when the reward model scores it above r(k) by more than ``margin``."""

    def __init__(self, scorer, margin: float = 0.0):
        self.scorer, self.margin = scorer, margin

    def __call__(self, candidates: Sequence[Candidate]) -> list[Verdict]:
        asked = [i for i, c in enumerate(candidates) if not c.identical]
        prompts = [instruction_messages(candidates[i].row["instruction"], candidates[i].row.get("input") or "")
                   for i in asked]
        texts = [candidates[i].revision for i in asked] + [candidates[i].draft for i in asked]
        scores = self.scorer.score(prompts + prompts, texts) if asked else []
        verdicts = [Verdict(True, ungated=True, detail={"reward": "identical"}) for _ in candidates]
        for n, i in enumerate(asked):
            revised, draft = float(scores[n]), float(scores[n + len(asked)])
            detail = {"reward_revision": round(revised, 6), "reward_draft": round(draft, 6), "margin": self.margin}
            keep = revised - draft > self.margin
            verdicts[i] = Verdict(keep, None if keep else "gate_not_better", score=revised, detail=detail)
        return verdicts


def make_gate(mode: str, *, teacher=None, reward_model: str | None = None, margin: float = 0.0,
              judge=None, scorer=None) -> Gate:
    """The gate for ``mode`` (see the module docstring). ``judge``/``scorer`` may be given ready-made;
    otherwise the judge is built on ``teacher`` and the scorer loaded from ``reward_model``."""
    if mode == "none":
        return no_gate
    if mode == "gold":
        return gold_gate
    if mode == "judge":
        if judge is None:
            from citing_trl.evaluation.judge import PairwiseJudge

            judge = PairwiseJudge(teacher)
        return JudgeGate(judge)
    if mode == "reward":
        if scorer is None:
            if not reward_model:
                raise ValueError("--revision_gate reward needs --gate_reward_model (a reward model folder or adapter)")
            from citing_trl.baselines.reward_model import RewardScorer

            scorer = RewardScorer.load(reward_model)
        return RewardGate(scorer, margin)
    raise ValueError(f"--revision_gate must be one of {', '.join(GATE_MODES)}, got {mode!r}")


# --------------------------------------------------------------------------------------------------
# Selection: format filter, gate, best of K
# --------------------------------------------------------------------------------------------------


def _record(row: dict, draft: str, revision: str) -> dict:
    """A training record: instruction, input, criteria, r(k), r(k+1). Gold answers are deliberately absent."""
    return {"id": row["id"], "instruction": row["instruction"], "input": row.get("input") or "",
            "category": row.get("category"), "criteria": row["criteria"], "response": draft, "revision": revision}


def select_revisions(
    rows: Sequence[dict], responses: dict[str, str], samples: Sequence[Sequence], gate: Gate | None = None,
    *, gate_mode: str = "none", reject_truncated: bool = True, keep_identical: bool = True,
    keep_complete_truncated: bool = False,
):
    """Pick each row's training revision among its teacher samples (``samples[i]``: Completions of row i).

    Returns ``(accepted, rejected, counts, report)``. ``counts`` partitions the rows: ``accepted``,
    ``kept_identical``, ``kept_truncated`` and one key per rejection reason (format reasons of :mod:`citing_trl.revision`, then
    ``gate_*``). ``report`` has the gate's ``ungated`` count and the fix/break tables (:func:`fix_break_report`).
    """
    gate = gate or no_gate
    per_row: list[list[Candidate]] = []
    format_reasons: list[list[str | None]] = []
    for row, outs in zip(rows, samples):
        draft = responses[row["id"]]
        cands, reasons = [], []
        for j, out in enumerate(outs):
            c = Candidate(row, draft, clean_revision(out.text), j, out.finish_reason, out.completion_tokens)
            cands.append(c)
            reasons.append(reject_reason(row, draft, c.revision, out.finish_reason, reject_truncated, keep_identical,
                                         keep_complete_truncated))
        per_row.append(cands)
        format_reasons.append(reasons)
    to_gate = [c for cands, reasons in zip(per_row, format_reasons) for c, r in zip(cands, reasons) if r is None]
    verdicts = dict(zip(((c.row["id"], c.sample) for c in to_gate), gate(to_gate)))

    accepted, rejected, counts, ungated = [], [], Counter(), 0
    for row, cands, reasons in zip(rows, per_row, format_reasons):
        passing = [c for c, r in zip(cands, reasons) if r is None and verdicts[(row["id"], c.sample)].keep]
        if passing:
            def rank(c: Candidate):
                v = verdicts[(row["id"], c.sample)]
                gold = (gold_score(row, c.revision) or (0.0, 0.0)) if gate_mode == "gold" else (0.0, 0.0)
                return (gold, v.score if v.score is not None else 0.0, -len(c.revision), -c.sample)

            best = max(passing, key=rank)
            verdict = verdicts[(row["id"], best.sample)]
            ungated += verdict.ungated
            if best.identical:
                counts[KEPT_IDENTICAL] += 1
            else:
                counts[KEPT_TRUNCATED if best.finish_reason == "length" and reject_truncated else "accepted"] += 1
            record = _record(row, best.draft, best.revision)
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
        record = {**_record(row, responses[row["id"]], shown.revision if shown else ""), "reason": reason}
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
    report = {"gate": gate_mode, "ungated": ungated,
              "fix_break": fix_break_report(rows, responses, [cands[0].revision if cands else "" for cands in per_row],
                                            accepted)}
    return accepted, rejected, dict(counts), report


# --------------------------------------------------------------------------------------------------
# Fix / break report
# --------------------------------------------------------------------------------------------------


def fix_break_report(rows: Sequence[dict], responses: dict[str, str], proposed: Sequence[str],
                     accepted: Sequence[dict]) -> dict:
    """How correctness changed from r(k) to r(k+1), on rows with gold (C1 ``fix_break``):

    ``proposed``: every row, r(k) against the teacher's first sample, before the format filter and the gate;
    ``kept``: the trained rows, r(k) against the kept revision.
    """
    from citing_trl.evaluation.gold import fix_break

    by_id = {r["id"]: r for r in rows}
    before = [is_right(r, responses[r["id"]]) for r in rows]
    after = [is_right(r, text) for r, text in zip(rows, proposed)]
    kept_before = [is_right(by_id[a["id"]], a["response"]) for a in accepted]
    kept_after = [is_right(by_id[a["id"]], a["revision"]) for a in accepted]
    return {"proposed": fix_break(before, after), "kept": fix_break(kept_before, kept_after)}


def print_fix_break(report: dict, title: str, console=None) -> None:
    """A rich table: one line per set (proposed, kept), one column per transition."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("revisions")
    for key in FIX_BREAK_KEYS:
        table.add_column(key.replace("_to_", "→").replace("_", " "), justify="right")
    labels = {"proposed": "proposed (pre-gate)", "kept": "kept (trained)"}
    for name, counts in report.items():
        table.add_row(labels.get(name, name), *(str(counts.get(k, 0)) for k in FIX_BREAK_KEYS))
    (console or Console()).print(table)


def print_round_report(k: int, report: dict, usage: dict, console=None) -> None:
    """End-of-round view: the fix/break table and the teacher's cost per kept row."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    print_fix_break(report["fix_break"], f"Round {k}: r({k}) -> r({k + 1}) on rows with gold (gate: {report['gate']})",
                    console)
    table = Table(title=f"Round {k}: teacher cost per kept row")
    for name in ("kept_rows", "requests_sent", "requests_per_kept_row", "tokens_per_kept_row"):
        table.add_column(name.replace("_", " "), justify="right")
    table.add_row(*(str(usage.get(name)) for name in ("kept_rows", "requests_sent", "requests_per_kept_row",
                                                        "tokens_per_kept_row")))
    console.print(table)


def check_settings(args) -> None:
    """Parse-time checks of the verification settings of CitingArguments (one line naming the flag); that
    best-of-K needs a teacher temperature > 0 is checked with the teacher's settings (citing_config.check_settings)."""
    from citing_trl.cli import check, check_choice

    check_choice("revision_gate", args.revision_gate, GATE_MODES)
    check(args.revision_gate != "reward" or bool(args.gate_reward_model), "gate_reward_model",
          "is needed by --revision_gate reward (a reward model folder or adapter)", args.gate_reward_model)
    check(isinstance(args.teacher_num_samples, int) and args.teacher_num_samples >= 1, "teacher_num_samples",
          "must be a whole number >= 1", args.teacher_num_samples)


def per_kept_row(usage: dict, kept: int) -> dict:
    """Teacher requests sent and tokens paid per kept training row (None when nothing was kept)."""
    tokens = usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
    return {
        "kept_rows": kept,
        "requests_per_kept_row": round(usage.get("requests_sent", 0) / kept, 3) if kept else None,
        "tokens_per_kept_row": round(tokens / kept, 1) if kept else None,
    }
