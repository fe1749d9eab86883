"""Building one round's revision data (Algorithm 1 lines 8-9).

Line 8: the current student pi(k) writes r(k) for every instruction x. In round 0 it answers x directly;
in later rounds it revises its previous draft with the revision prompt pr(x, c, r(k-1)) - the output of
f(k-1)_CITING that the paper asks the teacher to revise next (§3.3). ``rollout_mode="answer"`` makes every
round answer from scratch instead.

Line 9: the teacher revises (x, c, r(k)) -> r(k+1). Unusable revisions are rejected and counted by reason:
the format filter and the revision gate of :mod:`citing_trl.verification` decide which become training rows.

Both steps write to disk as they go (JSONL, one record per instruction id), so an interrupted round picks up
where it stopped: finished rollouts are not regenerated and finished teacher requests are served from the
teacher's cache.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from pathlib import Path

from citing_trl.evaluation.gold import fix_break
from citing_trl.generation import DecodingConfig, Generation, generate
from citing_trl.jsonl import append_jsonl, read_jsonl
from citing_trl.prompts import instruction_messages, reference_revision_messages, revision_messages
from citing_trl.verification import (
    KEPT_IDENTICAL,
    KEPT_TRUNCATED,
    Gate,
    GoldScores,
    RevisionSettings,
    Selection,
    make_gate,
    select_revisions,
)
from citing_trl.verification.selection import training_record

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Line 8: student rollouts
# --------------------------------------------------------------------------------------------------


_ECHOED_SECTION = re.compile(r"\n\s*#{2,}\s*\w")


def strip_echoed_sections(text: str) -> str:
    """A small student revising its answer sometimes goes on to repeat the prompt's '### ...' sections
    (standards, task); everything from the first such heading on is dropped."""
    match = _ECHOED_SECTION.search(text)
    return text[: match.start()].rstrip() if match else text


def rollout_prompt(row: dict, previous: str | None, prompt_style: str = "improve") -> list[dict]:
    """The student's prompt: the instruction (first answer) or pr(x, c, previous) with the ``prompt_style`` header."""
    if previous is None:
        return instruction_messages(row["instruction"], row.get("input") or "")
    return revision_messages(row["instruction"], row.get("input") or "", row["criteria"], previous, prompt_style)


def student_rollouts(
    model,
    tokenizer,
    rows: Sequence[dict],
    path: str | Path,
    gen_config: DecodingConfig,
    previous: dict[str, str] | None = None,
    rank: int = 0,
    world_size: int = 1,
    desc: str = "student rollouts",
    done: dict[str, dict] | None = None,
    prompt_style: str = "improve",
) -> dict[str, dict]:
    """Generate r(k) for each row (this rank's share), appending each finished batch to ``path``.

    Returns ``{id: {"response", "finish_reason", "completion_tokens"}}`` for this rank's rows, including the
    ones already on disk from an interrupted run (in ``path``, or passed in as ``done`` from other files).
    ``prompt_style``: the revision prompt's header when revising ``previous`` (:data:`citing_trl.prompts.REVISION_HEADERS`).
    """
    path = Path(path)
    done = {**(done or {}), **{r["id"]: r for r in read_jsonl(path)}}
    mine = [r for i, r in enumerate(rows) if i % world_size == rank]
    todo = [r for r in mine if r["id"] not in done]
    if todo:
        prompts = [rollout_prompt(r, previous.get(r["id"]) if previous else None, prompt_style) for r in todo]

        def save(indices: list[int], gens: list[Generation]) -> None:
            records = [
                {"id": todo[i]["id"], "response": strip_echoed_sections(g.text) if previous else g.text,
                 "finish_reason": g.finish_reason,
                 "completion_tokens": g.completion_tokens}
                for i, g in zip(indices, gens)
            ]
            append_jsonl(path, records)
            done.update({rec["id"]: rec for rec in records})

        logger.info("%s: %d to generate, %d already on disk", desc, len(todo), len(mine) - len(todo))
        generate(model, tokenizer, prompts, gen_config, desc=desc, on_batch=save)
    return {r["id"]: done[r["id"]] for r in mine}


# --------------------------------------------------------------------------------------------------
# Line 9: teacher revisions
# --------------------------------------------------------------------------------------------------


def gold_answers(row: dict) -> list[str]:
    """The row's gold answers (``answers``, else ``output``), [] when it has none."""
    answers = [a for a in (row.get("answers") or []) if isinstance(a, str) and a.strip()]
    if not answers and isinstance(row.get("output"), str) and row["output"].strip():
        answers = [row["output"]]
    return answers


def revision_requests(rows: Sequence[dict], responses: dict[str, str], reference: bool = False,
                      prompt_style: str = "improve") -> list[list[dict]]:
    """The teacher's revision prompt for every row: pr(x, c, r(k)) (header ``prompt_style``), or with ``reference``
    and a gold answer the reference-guided prompt."""
    return [
        reference_revision_messages(r["instruction"], r.get("input") or "", r["criteria"], responses[r["id"]],
                                    gold_answers(r))
        if reference and gold_answers(r) else
        revision_messages(r["instruction"], r.get("input") or "", r["criteria"], responses[r["id"]], prompt_style)
        for r in rows
    ]


def teacher_revisions(
    teacher, rows: Sequence[dict], responses: dict[str, str], settings: RevisionSettings | None = None, *,
    gate: Gate | None = None, desc: str = "teacher revisions", seed: int = 0, prompt_style: str = "improve",
) -> Selection:
    """Ask the teacher to revise every r(k) (``settings.teacher_num_samples`` samples each) and pick the training
    revisions through the format filter and the gate (:func:`citing_trl.verification.select_revisions`).

    ``settings``: the run's :class:`~citing_trl.verification.RevisionSettings`, handed on whole (default: its
    defaults). ``gate``: the built gate (default: the one ``settings.revision_gate`` names, asking ``teacher``).

    Returns a Selection (accepted records, rejected records, reason counts, verification report). Counts partition
    the rows: ``accepted`` (changed revisions), ``kept_identical`` (the teacher returned the draft unchanged and
    ``keep_identical`` is on: trained on too), ``kept_truncated`` (cut at the token cap but ending on a complete
    sentence) and one key per rejection reason.

    ``revision_reference``: for rows with gold answers (:func:`gold_answers`) the teacher's prompt also shows the
    gold answer (:func:`citing_trl.prompts.reference_revision_prompt`). The records keep the plain fields only, so
    the student's training prompt pr(x, c, r(k)) never contains it.

    ``keep_right_drafts``: this fraction of the rows whose draft is already right under its gold metric (drawn with
    ``seed``) is not sent to the teacher; each trains as a keep-unchanged row pr(x, c, r(k)) -> r(k), counted as
    ``kept_right_draft`` and as right->right in the ``kept`` fix/break table (:func:`pick_right_drafts`)."""
    settings = settings if settings is not None else RevisionSettings()
    gate = gate if gate is not None else make_gate(settings, teacher=teacher)
    scores = GoldScores()
    keep = pick_right_drafts(rows, responses, settings.keep_right_drafts, seed, scores)
    if not keep:
        return _ask_teacher(teacher, rows, responses, settings, gate, desc, prompt_style)
    asked = [r for r in rows if r["id"] not in keep]
    selection = _ask_teacher(teacher, asked, responses, settings, gate, desc, prompt_style) if asked else Selection(
        [], [], {}, {"gate": gate.name, "ungated": 0, "fix_break": {"proposed": fix_break([], [])}})
    by_id = {a["id"]: a for a in selection.accepted}
    accepted = [training_record(r, responses[r["id"]], responses[r["id"]]) if r["id"] in keep else by_id[r["id"]]
                for r in rows if r["id"] in keep or r["id"] in by_id]
    counts = {**selection.counts, KEPT_RIGHT_DRAFT: len(keep)}
    row_of = {r["id"]: r for r in rows}
    kept = fix_break([scores.is_right(row_of[a["id"]], a["response"]) for a in accepted],
                     [scores.is_right(row_of[a["id"]], a["revision"]) for a in accepted])
    report = {**selection.report, "fix_break": {**selection.report["fix_break"], "kept": kept}}
    logger.info("%s: %d right drafts kept unchanged as training rows (keep_right_drafts=%s)", desc, len(keep),
                settings.keep_right_drafts)
    return Selection(accepted, selection.rejected, counts, report)


def _ask_teacher(teacher, rows: Sequence[dict], responses: dict[str, str], settings: RevisionSettings, gate: Gate,
                 desc: str, prompt_style: str) -> Selection:
    """Every row to the teacher (K samples each), then the format filter, the gate and best-of-K."""
    requests = revision_requests(rows, responses, settings.revision_reference, prompt_style)
    if settings.teacher_num_samples > 1:
        samples = teacher.complete_samples(requests, settings.teacher_num_samples, desc=desc)
    else:
        samples = [[out] for out in teacher.complete_detailed(requests, desc=desc)]
    selection = select_revisions(rows, responses, samples, gate, settings)
    for reason, n in selection.counts.items():
        if reason not in ("accepted", KEPT_IDENTICAL, KEPT_TRUNCATED):
            logger.warning("%s: rejected %d revisions as %s", desc, n, reason)
    return selection


# --------------------------------------------------------------------------------------------------
# Keep-unchanged rows: right drafts as their own targets
# --------------------------------------------------------------------------------------------------

KEPT_RIGHT_DRAFT = "kept_right_draft"  # a right draft trained as pr(x, c, r(k)) -> r(k) (keep_right_drafts)


def right_draft_ids(rows: Sequence[dict], responses: dict[str, str], scores: GoldScores | None = None) -> list[str]:
    """Ids of the rows whose draft r(k) is already right under its source's primary gold metric (the gold
    gate's notion of right); rows without gold are never among them."""
    right = (scores if scores is not None else GoldScores()).is_right
    return [r["id"] for r in rows if right(r, responses[r["id"]])]


def pick_right_drafts(rows: Sequence[dict], responses: dict[str, str], fraction: float, seed: int = 0,
                      scores: GoldScores | None = None) -> set[str]:
    """``round(fraction * n_right)`` ids drawn (seeded) from the rows whose draft is right (:func:`right_draft_ids`).
    ``fraction`` is ``RevisionSettings.keep_right_drafts``, checked in [0, 1] where the settings are built."""
    right = right_draft_ids(rows, responses, scores)
    return set(random.Random(seed).sample(right, round(fraction * len(right)))) if fraction else set()

