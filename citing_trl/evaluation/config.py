"""Settings of ``recipes/evaluate.py``: which answers files to compare (:class:`EvaluationArguments`) and who
judges them (:class:`JudgeArguments`, the ``--judge_*`` view of :class:`~citing_trl.teacher.TeacherConfig`).

The judge is a teacher like any other, so its connection settings are TeacherConfig's fields, declared there
once. Three things are the evaluation's own, on top of them:

- ``--judge_backend none``: no judge at all, the gold metrics only;
- ``--judge_max_tokens`` unset: the small budget a verdict needs (:func:`~citing_trl.evaluation.judge.verdict_tokens`);
- ``--judge_batch``: the teacher's Batch API mode (``--judge_mode`` is the verdict format, joint or per aspect).

:func:`judge_config` applies them, once, after parsing, and returns the judge's TeacherConfig (None for ``none``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from citing_trl.configs import prefixed
from citing_trl.errors import ConfigError, check, check_choice
from citing_trl.evaluation.judge import MODES, verdict_tokens
from citing_trl.prompts import JUDGE_ASPECTS
from citing_trl.teacher import TeacherConfig
from citing_trl.teacher.backends import backend_names, backends_help

# `none` is the evaluation's own choice; the others are the teacher's backends


@dataclass
class EvaluationArguments:
    """Settings of ``recipes/evaluate.py`` other than the judge's connection (see :class:`JudgeArguments`)."""

    answers: list[str] = field(
        default_factory=list,
        metadata={"help": "Answers files as NAME=FILE (JSONL: id, source, instruction, input, answers, response "
                          "[, responses]). Two or more for Table 1; one file with `responses` gives Table 2 steps."},
    )
    reference: str | None = field(
        default=None, metadata={"help": "NAME of the system compared against every other (default: the first)."}
    )
    rounds: str | None = field(
        default=None,
        metadata={"help": "Comma-separated NAMEs of consecutive training rounds, oldest first (e.g. "
                          "round0,round1,round2): Table 2 compares each with the one before."},
    )
    output_dir: str = field(default="outputs/eval", metadata={"help": "Where the reports are written."})
    judge_mode: str = field(
        default="joint",
        metadata={"help": "`joint`: one request per order returns all aspects as JSON; `per_aspect`: one request "
                          "per order and aspect (the paper's setting, 3x the calls)."},
    )
    judge_aspects: str | None = field(
        default=None, metadata={"help": "Comma-separated aspects (default: articulate,in-depth,comprehensive)."}
    )
    judge_max_parse_retries: int = field(
        default=2, metadata={"help": "Times an unreadable verdict is asked again before it counts as unparsed."}
    )
    judge_batch: bool = field(
        default=False,
        metadata={"help": "`openai` only: send judge requests through the OpenAI Batch API (half the price, answers "
                          "within its 24h window; the batch id is saved next to the judge cache, so a killed run "
                          "polls the same batch). Re-asks of unreadable verdicts go in a further batch."},
    )
    judge_cache: str | None = field(
        default=None, metadata={"help": "Judge answer cache (default: OUTPUT_DIR/judge_cache.jsonl); reruns are free."}
    )
    bootstrap_samples: int = field(default=2000, metadata={"help": "Bootstrap resamples for the 95%% intervals."})
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap."})

    def systems(self) -> dict[str, str]:
        """NAME -> FILE, checked; the error names the flag."""
        if not self.answers:
            raise ConfigError("--answers: give at least one NAME=FILE", flag="answers")
        out = {}
        for spec in self.answers:
            name, sep, path = spec.partition("=")
            if not sep or not name.strip() or not path.strip():
                raise ConfigError(f"--answers: {spec!r} is not NAME=FILE", flag="answers")
            if name in out:
                raise ConfigError(f"--answers: the name {name!r} is given twice", flag="answers")
            out[name.strip()] = path.strip()
        return out

    def __post_init__(self):
        """Every check at parse time, like every other settings class (one line naming the flag)."""
        names = self.systems()
        if self.reference is not None and self.reference not in names:
            raise ConfigError(f"--reference {self.reference!r} is not one of the --answers names {list(names)}",
                              flag="reference")
        for name in self.round_names():
            if name not in names:
                raise ConfigError(f"--rounds: {name!r} is not one of the --answers names {list(names)}", flag="rounds")
        if self.rounds is not None and len(self.round_names()) < 2:
            raise ConfigError(f"--rounds needs at least two names, got {self.rounds!r}", flag="rounds")
        check_choice("judge_mode", self.judge_mode, MODES)
        if unknown := [a for a in self.aspects() if a not in JUDGE_ASPECTS]:
            raise ConfigError(f"--judge_aspects: unknown {unknown}; expected some of {list(JUDGE_ASPECTS)}",
                              flag="judge_aspects")
        check(self.judge_max_parse_retries >= 0, "judge_max_parse_retries", "must be >= 0", self.judge_max_parse_retries)
        check(self.bootstrap_samples >= 1, "bootstrap_samples", "must be >= 1", self.bootstrap_samples)

    def round_names(self) -> list[str]:
        return [n.strip() for n in (self.rounds or "").split(",") if n.strip()]

    def aspects(self) -> list[str]:
        if not self.judge_aspects:
            return list(JUDGE_ASPECTS)
        return [a.strip() for a in self.judge_aspects.split(",") if a.strip()]


_JudgeView = prefixed(
    TeacherConfig, "judge_", name="JudgeView",
    # `mode` (live/batch) is --judge_batch here: --judge_mode names the verdict format
    only=tuple(f.name for f in fields(TeacherConfig) if f.init and f.name != "mode"),
    defaults={"temperature": 0.0, "max_tokens": None},
    helps={
        "backend": f"`none` (gold metrics only), or a teacher backend: {backends_help()}.",
        "model": "Judge model: the served name for `openai`; a folder, Hub id or `embedded` for `local`.",
        "temperature": "Judge sampling temperature (0: greedy, the same verdict on a rerun).",
        "max_tokens": "Token budget of a verdict (default: small, 24 + 12 per aspect for `joint`, 24 for `per_aspect`).",
    },
)


class JudgeArguments(_JudgeView):
    """The judge's TeacherConfig as ``--judge_*`` flags, plus ``--judge_backend none`` and an unset
    ``--judge_max_tokens`` (see the module docstring). Build the judge's settings with :func:`judge_config`."""

    def __post_init__(self):
        check_choice("judge_backend", self.judge_backend, ("none", *backend_names()))  # none: gold metrics only
        # every other field by TeacherConfig's own rules (a `none` judge is never built, so any backend serves)
        probe = {"backend": "local"} if self.judge_backend == "none" else {}
        if self.judge_max_tokens is None:
            probe["max_tokens"] = 1  # unset: judge_config gives the verdict's own budget
        self.build(**probe)


def judge_config(args: EvaluationArguments, judge: JudgeArguments) -> TeacherConfig | None:
    """The judge's TeacherConfig (None for ``--judge_backend none``), from the judge's flags and the
    evaluation's own: the verdict budget follows ``--judge_mode``/``--judge_aspects`` unless
    ``--judge_max_tokens`` is given, and ``--judge_batch`` (which needs ``--judge_backend openai``) selects the
    Batch API."""
    check(not args.judge_batch or judge.judge_backend == "openai", "judge_batch",
          "needs --judge_backend openai (the Batch API)", judge.judge_backend)
    if judge.judge_backend == "none":
        return None
    max_tokens = judge.judge_max_tokens
    if max_tokens is None:
        max_tokens = verdict_tokens(args.judge_mode, len(args.aspects()))
    return judge.build(max_tokens=max_tokens, mode="batch" if args.judge_batch else "live")
