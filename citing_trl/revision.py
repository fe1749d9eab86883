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
import re
from collections.abc import Sequence
from pathlib import Path

from citing_trl.generation import GenerationConfig, Generation, generate
from citing_trl.jsonl import append_jsonl, read_jsonl
from citing_trl.prompts import instruction_messages, reference_revision_messages, revision_messages
from citing_trl.verification import KEPT_IDENTICAL, KEPT_TRUNCATED, Gate, Selection, select_revisions

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


def rollout_prompt(row: dict, previous: str | None) -> list[dict]:
    if previous is None:
        return instruction_messages(row["instruction"], row.get("input") or "")
    return revision_messages(row["instruction"], row.get("input") or "", row["criteria"], previous)


def student_rollouts(
    model,
    tokenizer,
    rows: Sequence[dict],
    path: str | Path,
    gen_config: GenerationConfig,
    previous: dict[str, str] | None = None,
    rank: int = 0,
    world_size: int = 1,
    desc: str = "student rollouts",
    done: dict[str, dict] | None = None,
) -> dict[str, dict]:
    """Generate r(k) for each row (this rank's share), appending each finished batch to ``path``.

    Returns ``{id: {"response", "finish_reason", "completion_tokens"}}`` for this rank's rows, including the
    ones already on disk from an interrupted run (in ``path``, or passed in as ``done`` from other files).
    """
    path = Path(path)
    done = {**(done or {}), **{r["id"]: r for r in read_jsonl(path)}}
    mine = [r for i, r in enumerate(rows) if i % world_size == rank]
    todo = [r for r in mine if r["id"] not in done]
    if todo:
        prompts = [rollout_prompt(r, previous.get(r["id"]) if previous else None) for r in todo]

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


def revision_requests(rows: Sequence[dict], responses: dict[str, str], reference: bool = False) -> list[list[dict]]:
    """The teacher's revision prompt for every row: pr(x, c, r(k)), or with ``reference`` and a gold answer the
    reference-guided prompt."""
    return [
        reference_revision_messages(r["instruction"], r.get("input") or "", r["criteria"], responses[r["id"]],
                                    gold_answers(r))
        if reference and gold_answers(r) else
        revision_messages(r["instruction"], r.get("input") or "", r["criteria"], responses[r["id"]]) for r in rows
    ]


def teacher_revisions(
    teacher, rows: Sequence[dict], responses: dict[str, str], desc: str = "teacher revisions",
    reject_truncated: bool = True, keep_identical: bool = True, keep_complete_truncated: bool = True,
    reference: bool = False, gate: Gate | None = None, gate_mode: str | None = None, num_samples: int = 1,
    temperature: float | None = None,
) -> Selection:
    """Ask the teacher to revise every r(k) (``num_samples`` samples each) and pick the training revisions
    through the format filter and the gate (:func:`citing_trl.verification.select_revisions`; ``gate`` None: no
    gate, ``gate_mode`` optional and then the gate's name).

    Returns a Selection (accepted records, rejected records, reason counts, verification report). Counts partition
    the rows: ``accepted`` (changed revisions), ``kept_identical`` (the teacher returned the draft unchanged and
    ``keep_identical`` is on: trained on too), ``kept_truncated`` (cut at the token cap but ending on a complete
    sentence) and one key per rejection reason.

    ``reference``: for rows with gold answers (:func:`gold_answers`) the teacher's prompt also shows the gold
    answer (:func:`citing_trl.prompts.reference_revision_prompt`). The records keep the plain fields only, so the
    student's training prompt pr(x, c, r(k)) never contains it."""
    requests = revision_requests(rows, responses, reference)
    sampling = {} if temperature is None else {"temperature": temperature}
    if num_samples > 1:
        samples = teacher.complete_samples(requests, num_samples, desc=desc, **sampling)
    else:
        samples = [[out] for out in teacher.complete_detailed(requests, desc=desc, **sampling)]
    selection = select_revisions(
        rows, responses, samples, gate, gate_mode=gate_mode, reject_truncated=reject_truncated,
        keep_identical=keep_identical, keep_complete_truncated=keep_complete_truncated,
    )
    for reason, n in selection.counts.items():
        if reason not in ("accepted", KEPT_IDENTICAL, KEPT_TRUNCATED):
            logger.warning("%s: rejected %d revisions as %s", desc, n, reason)
    return selection
