"""Settings of the PPO-RLHF baseline: :class:`PPOConfig` (the trainer's hyper-parameters),
:data:`PPOSamplingArguments` (how rollouts are sampled), :class:`RLHFArguments` (what to train and against which
reward, shared with RLOO) and :class:`PPOError` (a bad setting or input)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainingArguments

from citing_trl.baselines.common import StartArguments
from citing_trl.configs import prefixed
from citing_trl.errors import ConfigError, UserError
from citing_trl.generation import DecodingConfig


class PPOError(UserError, ValueError):
    """A bad PPO setting or input; the message names the field."""


@dataclass
class PPOConfig(TrainingArguments):
    """Settings of :class:`~citing_trl.baselines.ppo.trainer.PPOTrainer`: ``transformers.TrainingArguments`` plus
    PPO's own fields. Sources of the defaults: "trl 1.12" = ``trl.experimental.ppo.PPOConfig`` (trl 1.12.0),
    "OpenRLHF" = OpenRLHF 0.x ``train_ppo`` arguments, "trlx" = trlx's PPO config (used by the CITING paper's
    baselines).

    Of the inherited fields the trainer reads ``output_dir`` (checkpoints, log, adapters), ``seed`` (LoRA init,
    prompt order, sampling), ``max_steps``, ``learning_rate``, ``weight_decay``, ``max_grad_norm``,
    ``logging_steps``, ``save_steps``, ``save_total_limit``, ``use_cpu`` and ``gradient_accumulation_steps`` (minibatches
    per optimizer step, through ``accelerator.accumulate``); the optimizer is AdamW at a constant learning rate, so
    scheduler, optimizer-choice and the other batch-size fields of ``TrainingArguments`` do not apply (rollout and
    minibatch sizes are PPO fields below). Five inherited fields get PPO defaults, declared again
    here as TRL's configs do."""

    # TrainingArguments fields with a PPO default
    max_steps: int = field(
        default=100,
        metadata={"help": "PPO iterations (one rollout batch + its PPO epochs each). Project choice; overrides "
                  "TrainingArguments' -1."},
    )
    learning_rate: float = field(
        default=1e-5,
        metadata={"help": "AdamW learning rate for both adapters and the value head (trl 1.12: 3e-6 for full "
                  "fine-tuning; LoRA usually takes ~10x more, hence 1e-5; overrides TrainingArguments' 5e-5)."},
    )
    logging_steps: float = field(
        default=1, metadata={"help": "Write a log row every this many steps (every step: 1; overrides TrainingArguments' 500)."}
    )
    save_steps: float = field(
        default=10,
        metadata={"help": "Write a resumable checkpoint every this many steps (overrides TrainingArguments' 500)."},
    )
    save_total_limit: int | None = field(
        default=2,
        metadata={"help": "Keep at most this many checkpoints, oldest removed (overrides TrainingArguments' None)."},
    )

    # PPO
    per_device_rollout_batch_size: int = field(
        default=8,
        metadata={"help": "Prompts sampled per rank per step (trl 1.12: per_device_train_batch_size x grad accum)."},
    )
    per_device_mini_batch_size: int = field(
        default=4,
        metadata={"help": "Rollouts per optimizer step within a PPO epoch (trl 1.12 uses num_mini_batches=1; "
                  "smaller minibatches give several updates per rollout batch, as OpenRLHF does)."},
    )
    num_ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch (trl 1.12: 4; OpenRLHF: 1)."})
    kl_coef: float = field(
        default=0.05,
        metadata={"help": "beta of the per-token k1 KL penalty in the reward: fixed, or the starting value when "
                  "--kl_target is set (trl 1.12: 0.05; OpenRLHF: 0.01; trlx: init_kl_coef 0.05)."},
    )
    kl_target: float | None = field(
        default=None,
        metadata={"help": "None = fixed --kl_coef (the default). A number = trlx's adaptive KL controller (Ziegler et al. "
                  "2019): after each rollout batch beta *= 1 + clip(KL / kl_target - 1, -0.2, 0.2) * rollouts / "
                  "kl_horizon, KL = mean summed k1 KL per answer (trlx's example configs: target 6)."},
    )
    kl_horizon: int = field(
        default=10000,
        metadata={"help": "Horizon of the adaptive KL controller, in rollouts (trlx: 10000); used with --kl_target."},
    )
    gamma: float = field(default=1.0, metadata={"help": "GAE discount (trl 1.12, OpenRLHF, trlx: 1.0)."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda (trl 1.12 and trlx: 0.95; OpenRLHF: 1.0)."})
    cliprange: float = field(default=0.2, metadata={"help": "PPO ratio clip epsilon (trl 1.12, OpenRLHF, trlx: 0.2)."})
    cliprange_value: float = field(
        default=0.2, metadata={"help": "Value clip around the rollout values (trl 1.12 and trlx: 0.2; OpenRLHF: 0.5)."}
    )
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss (trl 1.12: 0.1; trlx: 1.0)."})
    whiten_advantages: bool = field(
        default=True, metadata={"help": "Normalize advantages to mean 0, std 1 over the batch's answer tokens (trl 1.12: always)."}
    )
    missing_eos_penalty: float | None = field(
        default=1.0,
        metadata={"help": "Subtracted from the score of an answer that hit --sample_max_new_tokens without EOS; None = off "
                  "(trl 1.12: optional, off by default; on here because the paper's answers must be complete)."},
    )
    reward_clip: float | None = field(
        default=10.0, metadata={"help": "Clip the score to [-x, x] before shaping; None = off (OpenRLHF: 10)."}
    )
    value_head_init_std: float = field(
        default=0.0,
        metadata={"help": "Std of the value head's random init when no reward model initialises it (0 = zeros, "
                  "so the first values are 0)."},
    )
    resume: bool = field(default=True, metadata={"help": "Continue from the newest checkpoint in output_dir if any."})

    def __post_init__(self):
        positive = ("max_steps", "per_device_rollout_batch_size", "per_device_mini_batch_size", "num_ppo_epochs",
                    "logging_steps", "save_steps", "save_total_limit", "kl_horizon", "gradient_accumulation_steps")
        for name in positive:
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:  # save_total_limit None: keep all
                raise PPOError(f"--{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("learning_rate", "cliprange", "cliprange_value"):
            if not getattr(self, name) > 0:
                raise PPOError(f"--{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("kl_coef", "vf_coef", "weight_decay", "max_grad_norm", "value_head_init_std"):
            if getattr(self, name) < 0:
                raise PPOError(f"--{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise PPOError(f"--{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.per_device_mini_batch_size > self.per_device_rollout_batch_size:
            raise PPOError(f"--per_device_mini_batch_size ({self.per_device_mini_batch_size}) must not exceed "
                           f"--per_device_rollout_batch_size ({self.per_device_rollout_batch_size})")
        if self.kl_target is not None and not self.kl_target > 0:
            raise PPOError(f"--kl_target must be > 0 (or None for a fixed --kl_coef), got {self.kl_target!r}")
        if self.kl_target is not None and not self.kl_coef > 0:
            raise PPOError("--kl_coef must be > 0 with --kl_target (the adaptive controller multiplies it), got 0")
        accumulated = self.per_device_mini_batch_size * self.gradient_accumulation_steps
        if self.gradient_accumulation_steps > 1 and self.per_device_rollout_batch_size % accumulated:
            raise PPOError(f"--gradient_accumulation_steps {self.gradient_accumulation_steps}: "
                           f"--per_device_rollout_batch_size ({self.per_device_rollout_batch_size}) must be a multiple of "
                           f"--per_device_mini_batch_size x --gradient_accumulation_steps ({accumulated}), so that every "
                           "optimizer step closes inside one PPO epoch")
        if self.missing_eos_penalty is not None and self.missing_eos_penalty < 0:
            raise PPOError(f"--missing_eos_penalty must be >= 0 (it is subtracted), got {self.missing_eos_penalty!r}")
        if self.reward_clip is not None and self.reward_clip <= 0:
            raise PPOError(f"--reward_clip must be > 0 or None, got {self.reward_clip!r}")
        super().__post_init__()


PPOSamplingArguments = prefixed(
    DecodingConfig, "sample_", name="PPOSamplingArguments",
    only=("max_new_tokens", "batch_size", "temperature", "top_k", "max_prompt_tokens", "show_progress"),
    defaults={"max_new_tokens": 64, "temperature": 0.7, "top_k": 0, "max_prompt_tokens": 512, "show_progress": False},
    doc="""How PPO samples its rollouts: :class:`~citing_trl.generation.DecodingConfig` fields as ``--sample_*``
    flags; ``build()`` gives the ``DecodingConfig`` handed to the trainer, which adds ``do_sample=True``, no
    top-p truncation and a seed per step and rank. Defaults: ``sample_max_new_tokens`` 64 (trl 1.12
    response_length: 53), ``sample_temperature`` 0.7 (trl 1.12: 0.7; OpenRLHF: 1.0; the log-probs of the ratio and
    the KL use logits / temperature too), ``sample_max_prompt_tokens`` 512 (paper: 512; prompts are cut from the
    left, for sampling and for the training forwards alike), ``sample_batch_size`` 8 prompts per generate() call,
    no progress bar, and ``sample_top_k`` 0: the full distribution, which PPO requires (see
    :func:`check_ppo_sampling`).""",
)


def check_ppo_sampling(sampling: DecodingConfig) -> None:
    """PPO's ratio and KL use the full ``softmax(logits / temperature)``, so the rollouts must be sampled from it:
    no top-k and no top-p truncation (transformers would apply ``top_k = 50`` when it is left unset)."""
    if sampling.top_k != 0:
        raise PPOError(f"--sample_top_k must be 0 for PPO (its log-probs use the full distribution), got {sampling.top_k!r}")
    if sampling.top_p != 1.0:
        raise PPOError(f"sampling top_p must be 1.0 for PPO (its log-probs use the full distribution), got {sampling.top_p!r}")


@dataclass
class RLHFArguments(StartArguments):
    """What to train and against which reward model or function. Shared by ``--method ppo`` and ``--method rloo``;
    which reward is used is ``--reward`` (:class:`citing_trl.baselines.common.RewardArguments`, parsed beside this
    and checked with it by :func:`check_reward_settings`)."""

    method: str = field(default="ppo", metadata={"help": "'ppo' (this project's PPOTrainer) or 'rloo' (TRL's RLOOTrainer)."})
    reward_model_path: str | None = field(
        default=None,
        metadata={"help": "With --reward model: the reward model trained by baselines/reward_model.py, loaded with "
                  "RewardScorer (contract C3); with PPO it also initialises the value model. Must be empty with "
                  "--reward gold."},
    )
    reward_function: str | None = field(
        default=None,
        metadata={"help": "With --reward model, instead of a reward model: 'module:function' importable callable "
                  "f(prompts, completions) -> list[float] (e.g. a rule-based reward)."},
    )

    def __post_init__(self):
        if self.method not in ("ppo", "rloo"):
            raise PPOError(f"--method must be 'ppo' or 'rloo', got {self.method!r}")
        if self.sft_adapter and not (Path(self.sft_adapter) / "adapter_config.json").is_file():
            raise PPOError(f"--sft_adapter {self.sft_adapter!r} is not a LoRA adapter folder (run recipes/sft.py first)")
        if self.reward_function and ":" not in self.reward_function:
            raise PPOError(f"--reward_function must look like 'module:function', got {self.reward_function!r}")


def check_reward_settings(rlhf: RLHFArguments, reward: str) -> None:
    """One reward, named without contradiction: ``reward`` is ``RewardArguments.reward`` ('model' or 'gold').
    'gold' takes neither a reward model nor a reward function; 'model' takes exactly one of them."""
    if reward == "gold":
        for flag in ("reward_model_path", "reward_function"):
            if getattr(rlhf, flag):
                raise ConfigError(f"--reward gold scores answers against the rows' gold answers, so --{flag} must be "
                                  f"empty (got {getattr(rlhf, flag)!r}; pass --{flag} '' to clear a YAML value)", flag=flag)
        return
    if rlhf.reward_model_path and rlhf.reward_function:
        raise ConfigError("--reward model: give only one of --reward_model_path and --reward_function",
                          flag="reward_function")
    if not (rlhf.reward_model_path or rlhf.reward_function):
        raise ConfigError("--reward model needs --reward_model_path (a trained reward model) or --reward_function "
                          "(module:function); or use --reward gold", flag="reward_model_path")
    if rlhf.reward_model_path and not Path(rlhf.reward_model_path).exists():
        raise ConfigError(f"--reward_model_path {rlhf.reward_model_path!r} does not exist (train it with "
                          "baselines/reward_model.py)", flag="reward_model_path")
