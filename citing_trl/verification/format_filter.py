"""The format filter: the first check every teacher revision passes before any gate sees it (Algorithm 1 line 9).

A revision r(k+1) cannot be a training target when it is empty, repeats the prompt's sections back, or was cut
at the teacher's token cap (``reject_truncated``; unless ``keep_complete_truncated`` and it ends on a complete
sentence). A revision equal to the draft r(k) is dropped as ``identical`` unless ``keep_identical`` (then it
teaches the student to keep a good answer and is counted as ``kept_identical``). The three settings are fields
of :class:`~citing_trl.verification.settings.RevisionSettings`, handed in whole.
"""

from __future__ import annotations

import re

from citing_trl.prompts import revision_prompt
from citing_trl.verification.base import is_identical, normalize_text
from citing_trl.verification.settings import RevisionSettings

REJECT_REASONS = ("empty", "identical", "echoes_prompt", "truncated")
KEPT_TRUNCATED = "kept_truncated"  # cut at the token cap but ends on a complete sentence (keep_complete_truncated)
KEPT_IDENTICAL = "kept_identical"  # a revision equal to the draft, kept as a training row (keep_identical)

_LABEL = re.compile(
    r"^\s*(?:#+\s*)?(?:improved answer|revised response|revised answer|revision)\b\s*(?::|-|\n)\s*", re.I
)


def clean_revision(text: str) -> str:
    """Strip a leading label such as '### Improved answer:' that some teachers repeat from the prompt."""
    return _LABEL.sub("", (text or "").strip(), count=1).strip()


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")
_SENTENCES = re.compile(r"[^.!?]+[.!?]+")


def ends_complete_sentence(text: str) -> bool:
    """True when ``text`` ends with a sentence mark (. ! ?, maybe closed by a quote or bracket) and repeats no
    sentence of 4+ words: a revision cut at the token cap right after a finished sentence is a whole answer,
    while one that loops ("The answer is yes. The answer is yes. ...") still is not."""
    text = text.strip()
    if not _SENTENCE_END.search(text):
        return False
    sentences = [normalize_text(s) for s in _SENTENCES.findall(text)]
    long = [s for s in sentences if len(s.split()) >= 4]
    return len(long) == len(set(long))


def reject_reason(
    row: dict, response: str, revision: str, finish_reason: str | None = None, settings: RevisionSettings | None = None,
) -> str | None:
    """Why a teacher revision cannot be a training target (None if it can), under ``settings`` (default: the
    defaults of :class:`~citing_trl.verification.settings.RevisionSettings`). A revision identical to the
    draft is rejected unless ``keep_identical`` (then it teaches the student to keep a good answer). With
    ``reject_truncated``, a revision cut at the token cap is rejected unless ``keep_complete_truncated`` and
    it ends on a complete sentence (:func:`ends_complete_sentence`)."""
    settings = settings if settings is not None else RevisionSettings()
    if not revision.strip():
        return "empty"
    if is_identical(response, revision):
        return None if settings.keep_identical else "identical"
    prompt = revision_prompt(row["instruction"], row.get("input") or "", row["criteria"], response)
    markers = ("### Task", "### Draft answer", "### Standards")
    if sum(m in revision for m in markers) >= 2 or (len(revision) > 80 and normalize_text(revision) in normalize_text(prompt)):
        return "echoes_prompt"
    if settings.reject_truncated and finish_reason == "length":
        if not (settings.keep_complete_truncated and ends_complete_sentence(revision)):
            return "truncated"
    return None
