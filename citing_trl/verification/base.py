"""What every revision gate shares: the candidate it checks, the verdict it returns, the Gate interface and the
registry that makes a gate selectable as ``--revision_gate <name>``.

A gate is one class in one file of this package (see :mod:`.gold` for a small one)::

    @register_gate
    class MyGate(Gate):
        name = "mine"                      # the --revision_gate value
        help = "keep r(k+1) when ..."      # one line: --revision_gate's help lists it

        def check(self, candidates):       # every candidate of the round at once (one batch)
            return [Verdict(keep=...) for c in candidates]

A gate's own settings are ``gate_<option>`` fields of :class:`~citing_trl.verification.settings.RevisionSettings`,
named in ``options``; they reach :meth:`Gate.build` as keywords. :meth:`Gate.check_settings` validates them
when the settings object is built (at parse time),
:meth:`Gate.preference` ranks a row's passing samples, :meth:`Gate.label` names the gate in the model card.
Nothing outside a gate's class looks at its name.

Gold scores are computed once per text: every :class:`Candidate` of a round reads them through one shared
:class:`GoldScores`, which the gold gate, the best-of-K ranking and the fix/break report all ask.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from citing_trl.errors import check_choice
from citing_trl.evaluation.gold import primary_metric, score_response

_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Whitespace collapsed, case folded: how the format filter compares a revision with its draft."""
    return _SPACE.sub(" ", text).strip().lower()


def is_identical(response: str, revision: str) -> bool:
    """The teacher kept the draft as it is (up to whitespace and case)."""
    return normalize_text(revision) == normalize_text(response)


# --------------------------------------------------------------------------------------------------
# Gold scores, once per text
# --------------------------------------------------------------------------------------------------


def gold_score(row: dict, text: str) -> tuple[float, float] | None:
    """(primary metric, secondary metric) of ``text`` against the row's gold answers; None without gold.
    Primary: ``accuracy``, ``answer_in_response`` or ``prompt_strict`` (as C1's ``is_correct``); secondary: ``f1``,
    ``answered`` or, for constraint rows, ``inst_strict`` (the share of constraints followed)."""
    scores = score_response(row.get("source") or "", text, row.get("answers") or [], row.get("input") or "")
    if not scores:
        return None
    primary = scores[primary_metric(scores)]
    return (primary, scores.get("f1", scores.get("answered", scores.get("inst_strict", 0.0))))


class GoldScores:
    """:func:`gold_score` remembered per (row id, text) for one round: a draft shared by K samples, a revision
    checked by the gate, ranked and counted in the fix/break report is scored once. Row ids are unique within
    a round."""

    def __init__(self):
        self._memo: dict[tuple, tuple[float, float] | None] = {}

    def __call__(self, row: dict, text: str) -> tuple[float, float] | None:
        key = (row["id"], text)
        if key not in self._memo:
            self._memo[key] = gold_score(row, text)
        return self._memo[key]

    def is_right(self, row: dict, text: str) -> bool | None:
        """The source's primary correctness (C1's ``is_correct``); None without gold."""
        score = self(row, text)
        return None if score is None else bool(score[0])


# --------------------------------------------------------------------------------------------------
# What a gate checks and what it answers
# --------------------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One teacher sample r(k+1) for one row, with the draft r(k) it revises."""

    row: dict
    draft: str
    revision: str
    sample: int = 0
    finish_reason: str | None = None
    completion_tokens: int = 0
    scores: GoldScores = field(default_factory=GoldScores, repr=False, compare=False)

    @property
    def identical(self) -> bool:
        return is_identical(self.draft, self.revision)

    @property
    def gold(self) -> tuple[float, float] | None:
        """The revision's gold score (None: the row has no gold answer)."""
        return self.scores(self.row, self.revision)

    @property
    def draft_gold(self) -> tuple[float, float] | None:
        """The draft's gold score (None: the row has no gold answer)."""
        return self.scores(self.row, self.draft)


@dataclass
class Verdict:
    """A gate's decision on one candidate: ``keep``; ``reason`` (why not); ``score`` (judge/reward score, used to
    rank passing samples); ``ungated`` (passed without a check); ``detail`` (written to rejected.jsonl)."""

    keep: bool
    reason: str | None = None
    score: float | None = None
    ungated: bool = False
    detail: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# The interface and the registry
# --------------------------------------------------------------------------------------------------


class Gate(ABC):
    """A check behind the format filter: which teacher revisions may become training rows."""

    name: ClassVar[str]
    help: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()  # settings read from the arguments' ``gate_<option>`` fields

    @classmethod
    def build(cls, *, teacher=None, **options) -> Gate:
        """The gate for a run; ``teacher`` is the run's teacher (for gates that ask it), ``options`` its settings."""
        return cls(**options)

    @classmethod
    def check_settings(cls, settings) -> None:
        """Checks of this gate's ``gate_<option>`` settings when a
        :class:`~citing_trl.verification.settings.RevisionSettings` is built (raise through
        :func:`citing_trl.errors.check`). Most gates have none."""
        return None

    @classmethod
    def label(cls, record: dict) -> str:
        """How the model card names this gate, from the round's recorded verification settings."""
        return f"`{cls.name}`"

    @abstractmethod
    def check(self, candidates: Sequence[Candidate]) -> list[Verdict]:
        """One verdict per candidate, in order; candidates are every format-passing sample of the round."""

    def __call__(self, candidates: Sequence[Candidate]) -> list[Verdict]:
        return self.check(candidates)

    def preference(self, candidate: Candidate, verdict: Verdict) -> tuple:
        """How a passing sample ranks among its row's passing samples (larger first; ties go to the shorter
        revision, then the earlier sample)."""
        return (verdict.score if verdict.score is not None else 0.0,)


GATES: dict[str, type[Gate]] = {}


def register_gate(cls: type[Gate]) -> type[Gate]:
    """Class decorator: make ``cls`` selectable as ``--revision_gate <cls.name>``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"gate class {cls.__name__} needs a non-empty class attribute 'name'")
    if GATES.get(name, cls) is not cls:
        raise ValueError(f"two gates are named {name!r}: {GATES[name].__name__} and {cls.__name__}")
    GATES[name] = cls
    return cls


def gate_names() -> tuple[str, ...]:
    """The ``--revision_gate`` choices, in registration order."""
    return tuple(GATES)


def make_gate(spec, *, teacher=None, **options) -> Gate:
    """The gate named by ``spec``: a gate name, or a :class:`~citing_trl.verification.settings.RevisionSettings`
    (``revision_gate`` names it and its ``gate_<option>`` fields give the gate's settings, e.g.
    ``gate_reward_model``, ``gate_margin``).
    ``options`` are keyword settings (they override the arguments' ones); ``teacher`` serves gates that ask
    it. A judge or a reward scorer may be given ready-made (``judge=``, ``scorer=``)."""
    name = spec if isinstance(spec, str) else spec.revision_gate
    check_choice("revision_gate", name, gate_names())
    cls = GATES[name]
    if not isinstance(spec, str):
        options = {**{o: getattr(spec, f"gate_{o}") for o in cls.options if hasattr(spec, f"gate_{o}")}, **options}
    return cls.build(teacher=teacher, **options)


def gate_label(record: dict) -> str:
    """The model card's name for the gate recorded in a round's verification settings."""
    cls = GATES.get(record["revision_gate"])
    return cls.label(record) if cls is not None else f"`{record['revision_gate']}`"
