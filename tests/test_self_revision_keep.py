"""Self-revision that keeps right answers (issue 18 item 5): right drafts as keep-unchanged training rows
(``keep_right_drafts``), the ratio honoured, no gold answer in a training record, and the flag's checks."""

from __future__ import annotations

import json

import pytest

from citing_trl.citing_config import CitingArguments
from citing_trl.citing_trainer import revision_to_prompt_completion
from citing_trl.errors import ConfigError
from citing_trl.revision import KEPT_RIGHT_DRAFT, pick_right_drafts, right_draft_ids, teacher_revisions
from citing_trl.teacher import Completion
from citing_trl.verification import RevisionSettings
from tests.testing_utils import gold_gate

GOLD = "ZEBRA-GOLD-7"  # a gold answer no prompt would contain by chance


def qa_rows(n: int) -> list[dict]:
    return [{"id": f"q{i}", "instruction": f"Question {i}: what is the code word?", "input": "",
             "criteria": "- Name the code word.", "category": "qa", "source": "nq_open",
             "answers": [f"{GOLD}-{i}"], "output": f"{GOLD}-{i}"} for i in range(n)]


class RewritingTeacher:
    """Rewrites every draft: states the right answer for even rows and a wrong one for odd rows (a teacher that
    sometimes breaks answers). Remembers which rows it was asked about."""

    def __init__(self):
        self.asked: list[str] = []

    def complete_detailed(self, requests, desc=""):
        out = []
        for messages in requests:
            text = messages[-1]["content"]
            i = int(text.split("Question ")[1].split(":")[0])
            self.asked.append(f"q{i}")
            out.append(Completion(f"The code word is {GOLD}-{i}, I believe." if i % 2 == 0 else "I do not know.",
                                  "stop", 10, 8))
        return out


def drafts(rows: list[dict], right_every: int = 2) -> dict[str, str]:
    """Every ``right_every``-th draft states the gold answer; the others are wrong."""
    return {r["id"]: (f"It is {GOLD}-{i}." if i % right_every == 0 else "No idea.") for i, r in enumerate(rows)}


def test_right_drafts_need_gold():
    rows = qa_rows(4)
    responses = drafts(rows)
    rows[2] = {**rows[2], "answers": [], "output": ""}  # a right-looking draft but no gold: never counted as right
    assert right_draft_ids(rows, responses) == ["q0"]


def test_off_keeps_the_old_rows():
    rows = qa_rows(6)
    teacher = RewritingTeacher()
    sel = teacher_revisions(teacher, rows, drafts(rows), RevisionSettings(keep_right_drafts=0.0), gate=gold_gate)
    assert teacher.asked == [r["id"] for r in rows]  # every row goes to the teacher
    assert KEPT_RIGHT_DRAFT not in sel.counts
    # the right drafts' targets are the teacher's rewrites, never the draft itself
    assert all(a["revision"] != a["response"] for a in sel.accepted)


def test_every_right_draft_becomes_a_keep_row():
    rows, responses = qa_rows(6), None
    responses = drafts(rows)
    teacher = RewritingTeacher()
    sel = teacher_revisions(teacher, rows, responses, RevisionSettings(keep_right_drafts=1.0), gate=gold_gate, seed=3)
    right = {"q0", "q2", "q4"}
    trained = {a["id"]: a for a in sel.accepted}
    assert right <= set(trained)
    for i in right:  # target = the draft, unchanged
        assert trained[i]["revision"] == trained[i]["response"] == responses[i]
    assert not set(teacher.asked) & right  # kept rows cost no teacher request
    assert sel.counts[KEPT_RIGHT_DRAFT] == 3
    assert sum(sel.counts.values()) == len(rows)  # counts still partition the rows
    assert sel.report["fix_break"]["kept"]["right_to_right"] == 3
    # records hold the plain fields only: no gold list, no reference, and the training prompt is pr(x, c, r)
    for rec in sel.accepted:
        assert "answers" not in rec and "output" not in rec
        example = revision_to_prompt_completion(rec)
        assert "Reference answer" not in json.dumps(example["prompt"])
        assert example["completion"][0]["content"] == rec["revision"]
    assert [a["id"] for a in sel.accepted] == [r["id"] for r in rows if r["id"] in trained]  # row order kept


@pytest.mark.parametrize("fraction, n_right, expected", [(0.5, 10, 5), (0.25, 8, 2), (1.0, 7, 7), (0.3, 10, 3)])
def test_ratio_is_honoured(fraction, n_right, expected):
    rows = qa_rows(2 * n_right)
    responses = drafts(rows)  # every other draft right: n_right of them
    picked = pick_right_drafts(rows, responses, fraction, seed=0)
    assert len(picked) == expected and picked <= set(right_draft_ids(rows, responses))
    assert pick_right_drafts(rows, responses, fraction, seed=0) == picked  # seeded
    sel = teacher_revisions(RewritingTeacher(), rows, responses, RevisionSettings(keep_right_drafts=fraction),
                            gate=gold_gate)
    keep_rows = [a for a in sel.accepted if a["revision"] == a["response"]]
    assert len(keep_rows) == sel.counts[KEPT_RIGHT_DRAFT] == expected


def test_all_rows_kept_asks_the_teacher_nothing():
    rows = qa_rows(3)
    responses = {r["id"]: r["answers"][0] for r in rows}
    teacher = RewritingTeacher()
    sel = teacher_revisions(teacher, rows, responses, RevisionSettings(keep_right_drafts=1.0), gate=gold_gate)
    assert teacher.asked == [] and sel.counts == {KEPT_RIGHT_DRAFT: 3} and len(sel.accepted) == 3


@pytest.mark.parametrize("bad", [-0.1, 1.5, True])
def test_flag_is_checked_at_parse_time(bad):
    with pytest.raises(ConfigError, match="keep_right_drafts"):
        CitingArguments(keep_right_drafts=bad)
    with pytest.raises(ValueError, match="keep_right_drafts"):  # the other entry point: the settings object itself
        RevisionSettings(keep_right_drafts=-0.5 if bad is True else bad)


# --------------------------------------------------------------------------------------------------
# The revision prompt variant (--revision_prompt)
# --------------------------------------------------------------------------------------------------

from citing_trl.prompts import KEEP_RIGHT_REVISION_HEADER, REVISION_HEADER, revision_prompt  # noqa: E402
from citing_trl.revision import revision_requests, rollout_prompt  # noqa: E402


def test_prompt_variant_text_is_chosen_by_the_flag():
    row = qa_rows(1)[0]
    improve = revision_prompt(row["instruction"], "", row["criteria"], "draft")
    keep = revision_prompt(row["instruction"], "", row["criteria"], "draft", "keep_right")
    assert improve.startswith(REVISION_HEADER) and KEEP_RIGHT_REVISION_HEADER not in improve
    assert keep.startswith(KEEP_RIGHT_REVISION_HEADER) and "exactly as it is" in keep
    assert "fix what is wrong, and add what is missing" in improve and "add what is missing" not in keep
    assert improve.split("\n\n", 1)[1] == keep.split("\n\n", 1)[1]  # the sections are the same
    # the student's rollout prompt, the teacher's plain request and the training prompt follow the choice
    assert KEEP_RIGHT_REVISION_HEADER in rollout_prompt(row, "draft", "keep_right")[0]["content"]
    assert REVISION_HEADER in rollout_prompt(row, "draft")[0]["content"]
    assert KEEP_RIGHT_REVISION_HEADER in revision_requests([row], {"q0": "d"}, prompt_style="keep_right")[0][0]["content"]
    rec = {**{k: row[k] for k in ("instruction", "criteria")}, "input": "", "response": "d", "revision": "d"}
    assert KEEP_RIGHT_REVISION_HEADER in revision_to_prompt_completion(rec, "keep_right")["prompt"][0]["content"]
    assert REVISION_HEADER in revision_to_prompt_completion(rec)["prompt"][0]["content"]
    with pytest.raises(ValueError, match="unknown revision prompt"):
        revision_prompt("x", "", "c", "d", "polish")


def test_prompt_flag_is_checked_at_parse_time():
    from citing_trl.self_revision import InferenceArguments

    assert CitingArguments(revision_prompt="keep_right").revision_prompt == "keep_right"
    with pytest.raises(ConfigError, match="revision_prompt"):
        CitingArguments(revision_prompt="polish")
    with pytest.raises(ConfigError, match="revision_prompt"):
        InferenceArguments(revision_prompt="polish")
