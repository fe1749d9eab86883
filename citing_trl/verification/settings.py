"""How a round's teacher revisions are asked for and filtered: one frozen settings object, handed down whole.

:class:`RevisionSettings` declares every setting of the revision filter once, with its one default and its help.
``CitingArguments`` carries its fields as flags (through :func:`citing_trl.configs.prefixed`, so nothing is
declared twice) and builds the object with :meth:`CitingArguments.revision_settings`; the pipeline hands it
whole to :func:`citing_trl.revision.teacher_revisions`, which hands it to :func:`.selection.select_revisions`,
which hands it to :func:`.format_filter.reject_reason`. Each of them takes the object (default: the defaults
below), so a caller that relies on a default gets the same filter wherever it enters. Round records
(``summary.json``, ``verification.json``, the model card) are written from it with :func:`dataclasses.asdict`.

A gate's own settings are ``gate_<option>`` fields here, named in the gate class's ``options``
(:mod:`.base`); a new gate with a setting adds one field below and nothing else.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from citing_trl.errors import check, check_choice
from citing_trl.verification.base import GATES, gate_names

# The built-in gates' modules (one gate class each, registered on import), in the order --revision_gate lists them.
# A new gate is a new module named here, so the help below (written from the registry) names it.
BUILT_IN_GATES = ("none", "gold", "judge", "reward")
for _module in BUILT_IN_GATES:
    importlib.import_module(f"citing_trl.verification.{_module}")


def gates_help() -> str:
    """``--revision_gate``'s help, written from the gate registry (each gate class's ``help``)."""
    choices = "; ".join(f"'{name}': {cls.help}" for name, cls in GATES.items())
    return (f"Check each revision before training on it. {choices}. See citing_trl/verification/ (one class per "
            "gate, one registry).")


@dataclass(frozen=True)
class RevisionSettings:
    """Every setting of the revision filter (format filter, gate, best-of-K, keep-unchanged rows)."""

    revision_reference: bool = field(
        default=False,
        metadata={"help": "Reference-guided revision: for rows with a gold answer (answers/output) the teacher also sees "
                  "it and revises the draft to agree with it. The student's training prompt never contains it."},
    )
    reject_truncated: bool = field(
        default=True, metadata={"help": "Reject teacher revisions that stopped at teacher_max_tokens (cut off)."}
    )
    keep_complete_truncated: bool = field(
        default=True,
        metadata={"help": "With reject_truncated, still train on a revision cut at teacher_max_tokens when it ends on a "
                  "complete sentence and repeats no sentence (counted as kept_truncated)."},
    )
    keep_identical: bool = field(
        default=True,
        metadata={"help": "Train on a teacher revision identical to the student's answer (the teacher kept a right "
                  "answer; counted as kept_identical). False drops it as 'identical', as before."},
    )
    keep_right_drafts: float = field(
        default=0.0,
        metadata={"help": "Fraction (0-1) of each round's rows whose draft r(k) is already right under its source's gold "
                  "metric that train as keep-unchanged rows pr(x, c, r(k)) -> r(k) instead of the teacher's rewrite "
                  "(those rows are not sent to the teacher). Teaches self-revision to keep a right answer. "
                  "0 = off (every target is the teacher's revision)."},
    )
    revision_gate: str = field(default="none", metadata={"help": gates_help()})
    gate_margin: float = field(default=0.0, metadata={"help": "revision_gate=reward: the least reward gain to keep a revision."})
    gate_reward_model: str | None = field(
        default=None, metadata={"help": "revision_gate=reward: the reward model (folder or LoRA adapter) to score with."}
    )
    teacher_num_samples: int = field(
        default=1,
        metadata={"help": "K: teacher revisions sampled per row (at teacher_temperature > 0); the gate keeps the best "
                  "passing one (gold score, then judge/reward score, then the shorter)."},
    )

    def __post_init__(self):
        """Parse-time checks (one line naming the flag): the fraction, the gate and its own settings, K."""
        check(isinstance(self.keep_right_drafts, (int, float)) and not isinstance(self.keep_right_drafts, bool)
              and 0.0 <= self.keep_right_drafts <= 1.0, "keep_right_drafts", "must be a fraction in [0, 1]",
              self.keep_right_drafts)
        check_choice("revision_gate", self.revision_gate, gate_names())
        GATES[self.revision_gate].check_settings(self)
        check(isinstance(self.teacher_num_samples, int) and self.teacher_num_samples >= 1, "teacher_num_samples", "must be a whole number >= 1",
              self.teacher_num_samples)
