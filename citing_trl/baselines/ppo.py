"""PPO-RLHF baseline (paper §4.3): a LoRA policy trained with PPO against a reward model.

Written for this project (TRL removed its PPOTrainer after trl 1.12). The algorithm follows the usual RLHF
recipe (Ziegler et al. 2019; Ouyang et al. 2022), with defaults taken from trl 1.12's experimental PPO unless a
field's help says otherwise:

* **Policy**: a LoRA adapter (``default``) on the SFT weights. The SFT adapter is merged into the backbone
  first, so the **reference model is the same backbone with the adapters disabled** - no second copy.
* **Value model**: a second LoRA adapter (``value``) on the same backbone plus a scalar head on the last
  hidden state. When the reward model is a LoRA adapter of the same backbone it initialises both (its LoRA
  weights and its ``score`` head), as trl 1.12 and OpenRLHF initialise the critic from the reward model.
* **Rollouts** are sampled through :func:`citing_trl.generation.generate` (the one generation routine) at
  ``temperature`` with no top-k/top-p truncation; every log-prob (old policy, new policy, reference) is computed from ``logits / temperature``
  so that the ratio and the KL refer to the distribution that was sampled.
* **Rewards**: the reward function scores the whole answer (a reward model reads it up to its last token);
  ``missing_eos_penalty`` is subtracted when the answer hit ``max_new_tokens`` without EOS. Per token the
  reward is ``-kl_coef * (log pi - log pi_ref)`` (the k1 estimator), and the score is added at the last token.
* **Advantages**: GAE(gamma, lam) on the per-token rewards and values, whitened over the batch's tokens.
* **Losses**: PPO clipped surrogate (``cliprange``) + ``vf_coef`` x clipped value loss (``cliprange_value``),
  token-level means, ``num_ppo_epochs`` passes over shuffled minibatches of every rollout batch.
* **Distributed**: each rank samples its own prompts; the gradients of the trainable tensors (two LoRA
  adapters and the value head, a few MB) are averaged over ranks with one all-reduce before every optimizer
  step, which is what DDP does. Works single-process and under DDP launchers (``accelerate_configs/
  multi_gpu.yaml``, ``cpu_2proc.yaml``, ``torchrun``); DeepSpeed and FSDP configs are refused with one line.
* **Outputs**: ``adapter/`` is the PPO adapter (it applies to the SFT-merged backbone); ``base_adapter/`` is the
  same policy as ONE LoRA adapter on the base model (SFT and PPO adapters concatenated, exact), loadable with
  ``citing_trl.models.load_model(base, adapter=...)``; ``ppo_log.jsonl`` one row per step; ``reward_curve.png``.
* **Resume**: ``<output_dir>/checkpoint-<step>/state.pt`` holds the trainable tensors, optimizer, step and
  RNG states; rerunning the same command continues from the newest one. Rollouts are drawn in a fixed,
  seeded order indexed by the step, so a resumed run sees the prompts the uninterrupted run would have.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from citing_trl.jsonl import read_jsonl

logger = logging.getLogger(__name__)

RewardFn = Callable[[list, list[str]], Sequence[float]]
POLICY, VALUE = "default", "value"


class PPOError(ValueError):
    """A bad PPO setting or input; the message names the field."""


@dataclass
class PPOConfig:
    """Settings of :class:`PPOTrainer`. Sources of the defaults: "trl 1.12" = ``trl.experimental.ppo.PPOConfig``
    (trl 1.12.0), "OpenRLHF" = OpenRLHF 0.x ``train_ppo`` arguments, "trlx" = trlx's PPO config (used by the
    CITING paper's baselines)."""

    output_dir: str = field(default="outputs/ppo", metadata={"help": "Where checkpoints, logs and the adapter go."})
    seed: int = field(default=42, metadata={"help": "Seed for LoRA init, prompt order and sampling."})
    max_steps: int = field(
        default=100, metadata={"help": "PPO iterations (one rollout batch + its PPO epochs each). Project choice."}
    )
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
    learning_rate: float = field(
        default=1e-5,
        metadata={"help": "AdamW learning rate for both adapters and the value head (trl 1.12: 3e-6 for full "
                  "fine-tuning; LoRA usually takes ~10x more, hence 1e-5)."},
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (trl 1.12 / TrainingArguments: 0)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (TrainingArguments / OpenRLHF: 1.0)."})
    max_new_tokens: int = field(default=64, metadata={"help": "Longest sampled answer (trl 1.12 response_length: 53)."})
    max_prompt_tokens: int | None = field(
        default=512, metadata={"help": "Prompts are cut from the left to this many tokens (paper: 512)."}
    )
    temperature: float = field(
        default=0.7,
        metadata={"help": "Sampling temperature; log-probs for the ratio and the KL use logits / temperature "
                  "(trl 1.12: 0.7; OpenRLHF: 1.0)."},
    )
    generation_batch_size: int = field(default=8, metadata={"help": "Prompts per generate() call."})
    kl_coef: float = field(
        default=0.05,
        metadata={"help": "beta of the per-token k1 KL penalty in the reward, fixed (trl 1.12: 0.05; OpenRLHF: 0.01; "
                  "trlx: adaptive from 0.05, not implemented here)."},
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
        metadata={"help": "Subtracted from the score of an answer that hit max_new_tokens without EOS; None = off "
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
    logging_steps: int = field(default=1, metadata={"help": "Write a log row every this many steps (every step: 1)."})
    save_steps: int = field(default=10, metadata={"help": "Write a resumable checkpoint every this many steps."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep at most this many checkpoints (oldest removed)."})
    resume: bool = field(default=True, metadata={"help": "Continue from the newest checkpoint in output_dir if any."})
    show_progress: bool = field(default=False, metadata={"help": "Show generate()'s progress bar."})

    def __post_init__(self):
        positive = ("max_steps", "per_device_rollout_batch_size", "per_device_mini_batch_size", "num_ppo_epochs",
                    "max_new_tokens", "generation_batch_size", "logging_steps", "save_steps", "save_total_limit")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise PPOError(f"--{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("learning_rate", "temperature", "cliprange", "cliprange_value"):
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
        if self.missing_eos_penalty is not None and self.missing_eos_penalty < 0:
            raise PPOError(f"--missing_eos_penalty must be >= 0 (it is subtracted), got {self.missing_eos_penalty!r}")
        if self.reward_clip is not None and self.reward_clip <= 0:
            raise PPOError(f"--reward_clip must be > 0 or None, got {self.reward_clip!r}")


# ------------------------------------------------------------------------------------------------------
# The maths, as pure functions (unit-tested against hand computations)
# ------------------------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries (population variance); masked-out entries become 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def token_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                  kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef * k1 KL (log pi - log pi_ref) at every answer token, plus the sequence
    score at the answer's last token. Returns (rewards, kl) with shape (B, T), zero outside ``mask``."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    lengths = mask.sum(1).long()
    rows = torch.arange(len(scores), device=scores.device)
    rewards[rows, (lengths - 1).clamp(min=0)] += scores * (lengths > 0)
    return rewards, kl


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalized advantage estimation over answer tokens (answers are left-aligned, padding after them).

    delta_t = r_t + gamma * V_{t+1} - V_t (V = 0 after the last token), A_t = delta_t + gamma * lam * A_{t+1}.
    Returns (advantages, returns = advantages + values), zero outside ``mask``."""
    values = values * mask
    rewards = rewards * mask
    steps = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        advantages[:, t] = last
    return advantages, (advantages + values) * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                cliprange: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate: mean over tokens of max(-A r, -A clip(r, 1-eps, 1+eps)), r = exp(log pi - log pi_old).
    Also returns the clip fraction and approx KL (mean of 0.5 (log r)^2, the k2 estimator)."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    stats = {
        "clipfrac": masked_mean((clipped > unclipped).float(), mask).detach(),
        "approx_kl": masked_mean(0.5 * log_ratio**2, mask).detach(),
    }
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss: 0.5 * mean over tokens of max((V - R)^2, (clip(V, V_old +- eps) - R)^2).
    Returns (loss, fraction of tokens where the clipped term was larger)."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).float(), mask).detach()


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.gather(F.log_softmax(logits.float() / temperature, dim=-1), 2, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


# ------------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------------


def merge_sft_adapter(model, sft_adapter: str | None):
    """Fold the SFT adapter into the backbone so that 'adapters disabled' means the SFT policy."""
    if not sft_adapter:
        return model
    from peft import PeftModel

    if not (Path(sft_adapter) / "adapter_config.json").is_file():
        raise PPOError(f"--sft_adapter {sft_adapter!r} is not a LoRA adapter folder (no adapter_config.json)")
    return PeftModel.from_pretrained(model, sft_adapter).merge_and_unload()


def _reward_adapter_state(path: str | None) -> tuple[dict, dict | None, torch.Tensor | None]:
    """From a reward model saved as a LoRA adapter: (its LoRA config dict, its LoRA tensors, its score head)."""
    if not path or not (Path(path) / "adapter_config.json").is_file():
        return {}, None, None
    from safetensors.torch import load_file

    cfg = json.loads((Path(path) / "adapter_config.json").read_text())
    weights = Path(path) / "adapter_model.safetensors"
    if not weights.is_file():
        return cfg, None, None
    state = load_file(str(weights))
    lora = {k: v for k, v in state.items() if "lora_" in k}
    head = next((v for k, v in state.items() if k.endswith("score.weight") or k.endswith("score.modules_to_save.weight")), None)
    return cfg, lora, head


class ValueHead(torch.nn.Module):
    def __init__(self, hidden_size: int, init_std: float = 0.0):
        super().__init__()
        self.summary = torch.nn.Linear(hidden_size, 1, bias=True)
        torch.nn.init.normal_(self.summary.weight, std=init_std) if init_std > 0 else torch.nn.init.zeros_(self.summary.weight)
        torch.nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


# ------------------------------------------------------------------------------------------------------
# Trainer
# ------------------------------------------------------------------------------------------------------


@dataclass
class Rollout:
    input_ids: torch.Tensor  # (B, L) prompt + answer, right-padded
    attention_mask: torch.Tensor
    starts: torch.Tensor  # (B,) index of the last prompt token (its logits predict the first answer token)
    answer_ids: torch.Tensor  # (B, T) answer tokens, left-aligned
    mask: torch.Tensor  # (B, T) 1 on answer tokens
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor
    rewards: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


class PPOTrainer:
    """PPO on a LoRA policy. ``model`` is a causal LM holding the SFT weights (see :func:`merge_sft_adapter`);
    the trainer adds the ``default`` (policy) and ``value`` LoRA adapters from ``peft_config``.

    ``reward_fn(prompts, completions) -> list[float]`` scores whole answers: prompts are the items of
    ``prompts`` as given (chat message lists or strings), completions the decoded answers.
    """

    _name = "PPO"

    def __init__(self, config: PPOConfig, model, tokenizer, prompts: Sequence, reward_fn: RewardFn, peft_config,
                 reward_model_path: str | None = None, accelerator=None, sft_adapter: str | None = None):
        from accelerate import Accelerator
        from peft import get_peft_model, set_peft_model_state_dict

        if not prompts:
            raise PPOError("no training prompts (the data set is empty)")
        self.config = config
        self.sft_adapter = sft_adapter
        self.accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
        dist = str(self.accelerator.distributed_type)
        if "DEEPSPEED" in dist or "FSDP" in dist:
            raise PPOError(f"PPOTrainer supports single-process and DDP launches, not {dist}; use "
                           "accelerate_configs/multi_gpu.yaml")
        self.tokenizer = tokenizer
        self.prompts = list(prompts)
        self.reward_fn = reward_fn
        self.device = self.accelerator.device
        torch.manual_seed(config.seed)
        self.model = get_peft_model(model, peft_config, adapter_name=POLICY)
        rm_cfg, rm_lora, rm_head = _reward_adapter_state(reward_model_path)
        value_cfg = peft_config
        if rm_lora:
            from peft import LoraConfig

            value_cfg = LoraConfig(r=rm_cfg["r"], lora_alpha=rm_cfg["lora_alpha"], lora_dropout=0.0,
                                   target_modules=rm_cfg["target_modules"], task_type="CAUSAL_LM")
        self.model.add_adapter(VALUE, copy.deepcopy(value_cfg))
        hidden = self.model.get_base_model().config.hidden_size
        self.value_head = ValueHead(hidden, config.value_head_init_std)
        self.value_initialised_from_rm = False
        if rm_lora:
            result = set_peft_model_state_dict(self.model, rm_lora, adapter_name=VALUE)
            unexpected = getattr(result, "unexpected_keys", []) or []
            if rm_head is not None and rm_head.shape[-1] == hidden and not unexpected:
                with torch.no_grad():
                    self.value_head.summary.weight.copy_(rm_head[:1].to(self.value_head.summary.weight.dtype))
                self.value_initialised_from_rm = True
            else:
                logger.warning("reward model at %s did not fit the value model; value adapter/head stay fresh",
                               reward_model_path)
        # Pure temperature sampling, so that logits / temperature IS the sampling distribution: transformers
        # applies top_k = 50 when sampling unless the model's generation config says otherwise (trl 1.12 sets 0 too).
        self.model.get_base_model().generation_config.top_k = 0
        self.model.to(self.device)
        self.value_head.to(self.device)
        self.model.eval()  # dropout off for every forward (trl 1.12 disables dropout too): ratios start at 1
        self._activate(POLICY)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self._broadcast_from_main()
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.step = 0
        self.output_dir = Path(config.output_dir)
        self.log_path = self.output_dir / "ppo_log.jsonl"
        self.log_history: list[dict] = []

    # ---- plumbing -------------------------------------------------------------------------------------
    def _activate(self, adapter: str):
        """Switch the active adapter; peft then freezes the other one, so every LoRA tensor is re-marked
        trainable (a minibatch uses both adapters before one backward)."""
        self.model.set_adapter(adapter)
        for name, param in self.model.named_parameters():
            if "lora_" in name:
                param.requires_grad_(True)

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    def _broadcast_from_main(self):
        if self.world > 1:
            for p in self.trainable:
                torch.distributed.broadcast(p.data, src=0)

    def _allreduce_grads(self):
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.trainable]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in self.trainable:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def _mean_across_ranks(self, values: dict[str, float]) -> dict[str, float]:
        if self.world == 1:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t.tolist())}

    def weights_digest(self) -> float:
        """Sum of |w| over the trainable tensors: a cheap fingerprint to check that ranks agree."""
        return float(sum(p.detach().double().abs().sum() for p in self.trainable))

    # ---- data ---------------------------------------------------------------------------------------------
    def prompts_for_step(self, step: int) -> list:
        """This rank's prompts for ``step``: a seeded permutation per pass over the data, sliced by step and rank."""
        per_rank = self.config.per_device_rollout_batch_size
        global_batch = per_rank * self.world
        n = len(self.prompts)
        start = step * global_batch + self.accelerator.process_index * per_rank
        out, cache = [], {}
        for pos in range(start, start + per_rank):
            epoch, offset = divmod(pos, n)
            if epoch not in cache:
                g = torch.Generator().manual_seed(self.config.seed + 1000003 * epoch)
                cache[epoch] = torch.randperm(n, generator=g).tolist()
            out.append(self.prompts[cache[epoch][offset]])
        return out

    def _encode_prompt(self, prompt) -> list[int]:
        from citing_trl.generation import render_prompt

        ids = self.tokenizer(render_prompt(self.tokenizer, prompt), add_special_tokens=False)["input_ids"]
        return ids[-self.config.max_prompt_tokens :] if self.config.max_prompt_tokens else ids

    # ---- forwards -----------------------------------------------------------------------------------------
    def _gather_answer(self, per_position: torch.Tensor, starts: torch.Tensor, steps: int) -> torch.Tensor:
        """Pick positions starts + t, t < steps (the states that predict answer token t)."""
        index = (starts[:, None] + torch.arange(steps, device=starts.device)[None, :]).clamp(max=per_position.shape[1] - 1)
        if per_position.dim() == 3:
            index = index[..., None].expand(-1, -1, per_position.shape[-1])
        return torch.gather(per_position, 1, index)

    def _policy_logits(self, batch: Rollout | dict, reference: bool = False) -> torch.Tensor:
        ids, attn, starts, steps = batch["input_ids"], batch["attention_mask"], batch["starts"], batch["answer_ids"].shape[1]
        if reference:
            with self.model.disable_adapter():
                logits = self.model(input_ids=ids, attention_mask=attn).logits
        else:
            self._activate(POLICY)
            logits = self.model(input_ids=ids, attention_mask=attn).logits
        return self._gather_answer(logits, starts, steps)

    def _values(self, batch) -> torch.Tensor:
        self._activate(VALUE)
        try:
            decoder = self.model.get_base_model().get_decoder()
            hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        except (AttributeError, NotImplementedError):
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
            hidden = out.hidden_states[-1]
        self._activate(POLICY)
        return self.value_head(self._gather_answer(hidden, batch["starts"], batch["answer_ids"].shape[1]))

    # ---- one PPO iteration -----------------------------------------------------------------------------
    def rollout(self, step: int) -> tuple[dict, dict]:
        from citing_trl.generation import GenerationConfig, generate

        cfg = self.config
        prompts = self.prompts_for_step(step)
        self._activate(POLICY)
        gen_cfg = GenerationConfig(
            max_new_tokens=cfg.max_new_tokens, batch_size=cfg.generation_batch_size, do_sample=True,
            temperature=cfg.temperature, top_p=1.0, seed=cfg.seed + 7919 * step + 104729 * self.accelerator.process_index,
            max_prompt_tokens=cfg.max_prompt_tokens, show_progress=cfg.show_progress,
        )
        gens = generate(self.model, self.tokenizer, prompts, gen_cfg, desc=f"PPO step {step} rollouts")
        prompt_ids = [self._encode_prompt(p) for p in prompts]
        answers = [g.token_ids or [] for g in gens]
        if any(not a for a in answers):  # max_new_tokens >= 1, so only a degenerate generate() gets here
            raise PPOError("generate() returned an empty answer with no EOS token")
        width = max(len(p) + len(a) for p, a in zip(prompt_ids, answers))
        steps = max(len(a) for a in answers)
        B = len(prompts)
        input_ids = torch.full((B, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((B, width), dtype=torch.long)
        answer_ids = torch.full((B, steps), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, steps))
        for i, (p, a) in enumerate(zip(prompt_ids, answers)):
            input_ids[i, : len(p) + len(a)] = torch.tensor(p + a)
            attention[i, : len(p) + len(a)] = 1
            answer_ids[i, : len(a)] = torch.tensor(a)
            mask[i, : len(a)] = 1
        starts = torch.tensor([len(p) - 1 for p in prompt_ids])
        batch = {k: v.to(self.device) for k, v in dict(input_ids=input_ids, attention_mask=attention, starts=starts,
                                                        answer_ids=answer_ids, mask=mask).items()}
        completions = [g.text for g in gens]
        raw = [float(s) for s in self.reward_fn(prompts, completions)]
        if len(raw) != B or not all(math.isfinite(s) for s in raw):
            raise PPOError(f"reward_fn returned {len(raw)} scores for {B} answers or a non-finite score: {raw[:8]}")
        scores = torch.tensor(raw, device=self.device)
        no_eos = torch.tensor([g.finish_reason != "stop" for g in gens], device=self.device)
        if cfg.reward_clip is not None:
            scores = scores.clamp(-cfg.reward_clip, cfg.reward_clip)
        if cfg.missing_eos_penalty is not None:
            scores = scores - cfg.missing_eos_penalty * no_eos.float()
        m = batch["mask"]
        with torch.no_grad():
            logits = self._policy_logits(batch)
            logprobs = logprobs_from_logits(logits, batch["answer_ids"], cfg.temperature) * m
            entropy = masked_mean(entropy_from_logits(logits, cfg.temperature), m)
            del logits
            ref_logprobs = logprobs_from_logits(self._policy_logits(batch, reference=True), batch["answer_ids"],
                                                cfg.temperature) * m
            values = self._values(batch) * m
        rewards, kl = token_rewards(scores, logprobs, ref_logprobs, m, cfg.kl_coef)
        advantages, returns = compute_gae(rewards, values, m, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = masked_whiten(advantages, m)
        batch.update(logprobs=logprobs, ref_logprobs=ref_logprobs, values=values, scores=scores, rewards=rewards,
                     advantages=advantages, returns=returns)
        kl_seq = kl.sum(1)
        stats = {
            "score": float(torch.tensor(raw).mean()),
            "score_shaped": float(scores.mean()),
            "kl": float(kl_seq.mean()),
            "non_score_reward": float((-cfg.kl_coef * kl_seq).mean()),
            "entropy": float(entropy),
            "answer_length": float(m.sum(1).mean()),
            "no_eos_fraction": float(no_eos.float().mean()),
            "value_mean": float(masked_mean(values, m)),
        }
        return batch, stats

    def train_on_rollout(self, batch: dict) -> dict:
        cfg = self.config
        B = batch["input_ids"].shape[0]
        sums: dict[str, float] = {}
        count = 0
        g = torch.Generator().manual_seed(cfg.seed + 31 * self.step)
        for _ in range(cfg.num_ppo_epochs):
            order = torch.randperm(B, generator=g)
            for lo in range(0, B, cfg.per_device_mini_batch_size):
                idx = order[lo : lo + cfg.per_device_mini_batch_size].to(self.device)
                mb = {k: v[idx] for k, v in batch.items()}
                # trim right padding shared by the whole minibatch
                answer_len = int(mb["mask"].sum(1).max())
                seq_len = int(mb["attention_mask"].sum(1).max())
                mb["answer_ids"], mb["mask"] = mb["answer_ids"][:, :answer_len], mb["mask"][:, :answer_len]
                for k in ("logprobs", "values", "advantages", "returns"):
                    mb[k] = mb[k][:, :answer_len]
                mb["input_ids"], mb["attention_mask"] = mb["input_ids"][:, :seq_len], mb["attention_mask"][:, :seq_len]
                m = mb["mask"]
                logits = self._policy_logits(mb)
                new_logprobs = logprobs_from_logits(logits, mb["answer_ids"], cfg.temperature)
                pg_loss, pg_stats = policy_loss(new_logprobs, mb["logprobs"], mb["advantages"], m, cfg.cliprange)
                new_values = self._values(mb)
                vf_loss, vf_clipfrac = value_loss(new_values, mb["values"], mb["returns"], m, cfg.cliprange_value)
                loss = pg_loss + cfg.vf_coef * vf_loss
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self._allreduce_grads()
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self.trainable, cfg.max_grad_norm)
                self.optimizer.step()
                for k, v in {"policy_loss": pg_loss.detach(), "value_loss": vf_loss.detach(),
                             "clipfrac": pg_stats["clipfrac"], "approx_kl": pg_stats["approx_kl"],
                             "value_clipfrac": vf_clipfrac}.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                count += 1
        return {k: v / count for k, v in sums.items()}

    # ---- checkpoints -----------------------------------------------------------------------------------
    def _checkpoints(self) -> list[Path]:
        found = [p for p in self.output_dir.glob("checkpoint-*") if (p / "state.pt").is_file()]
        return sorted(found, key=lambda p: int(p.name.split("-")[-1]))

    def save_checkpoint(self):
        if self.accelerator.is_main_process:
            target = self.output_dir / f"checkpoint-{self.step}"
            tmp = self.output_dir / f".tmp-checkpoint-{self.step}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            torch.save({
                "step": self.step,
                "trainable": [p.detach().cpu() for p in self.trainable],
                "optimizer": self.optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "config": asdict(self.config),
            }, tmp / "state.pt")
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)  # a checkpoint folder exists only once complete
            for old in self._checkpoints()[: -self.config.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def maybe_resume(self) -> bool:
        if not self.config.resume:
            return False
        checkpoints = self._checkpoints()
        if not checkpoints:
            return False
        state = torch.load(checkpoints[-1] / "state.pt", map_location="cpu", weights_only=False)
        if len(state["trainable"]) != len(self.trainable):
            raise PPOError(f"checkpoint {checkpoints[-1]} does not match this model (different LoRA settings?)")
        with torch.no_grad():
            for p, saved in zip(self.trainable, state["trainable"]):
                p.copy_(saved.to(p.device, p.dtype))
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        if self.log_path.is_file():  # drop rows logged after the checkpoint: they will be redone
            rows = read_jsonl(self.log_path)  # tolerant: a kill can tear the last line
            self.log_history = [r for r in rows if r.get("step", 0) <= self.step]
            if self.accelerator.is_main_process:
                self.log_path.write_text("".join(json.dumps(r) + "\n" for r in self.log_history))
        self.accelerator.wait_for_everyone()
        logger.info("resumed from %s at step %d", checkpoints[-1], self.step)
        return True

    # ---- main loop ---------------------------------------------------------------------------------------
    def train(self) -> list[dict]:
        cfg = self.config
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.maybe_resume()
        while self.step < cfg.max_steps:
            t0 = time.time()
            batch, stats = self.rollout(self.step)
            stats.update(self.train_on_rollout(batch))
            self.step += 1
            stats = self._mean_across_ranks(stats)
            stats.update(step=self.step, seconds=round(time.time() - t0, 3))
            if self.step % cfg.logging_steps == 0 or self.step == cfg.max_steps:
                self.log_history.append(stats)
                if self.accelerator.is_main_process:
                    with self.log_path.open("a") as f:
                        f.write(json.dumps(stats) + "\n")
                    logger.info("step %d | score %.3f | kl %.3f | entropy %.3f | pg %.4f | vf %.4f | clip %.3f | "
                                "approx_kl %.4f | len %.1f", self.step, stats["score"], stats["kl"], stats["entropy"],
                                stats["policy_loss"], stats["value_loss"], stats["clipfrac"], stats["approx_kl"],
                                stats["answer_length"])
            if self.step % cfg.save_steps == 0 or self.step == cfg.max_steps:
                self.save_checkpoint()
        return self.log_history

    def save_model(self, output_dir: str | None = None) -> Path:
        """Save ``adapter/`` (the PPO adapter; it applies on top of the SFT-merged backbone), ``base_adapter/`` (the
        same policy as ONE LoRA adapter on the base model, SFT adapter folded in exactly), both with the tokenizer,
        ``value/`` (value adapter + head), a digest of every rank's weights and the reward curve."""
        target = Path(output_dir or self.output_dir)
        digests = [self.weights_digest()]
        if self.world > 1:
            gathered = [None] * self.world
            torch.distributed.all_gather_object(gathered, digests[0])
            digests = gathered
        if self.accelerator.is_main_process:
            target.mkdir(parents=True, exist_ok=True)
            self.model.save_pretrained(target / "adapter", selected_adapters=[POLICY])
            self.tokenizer.save_pretrained(target / "adapter")
            save_policy_adapter(self.model, POLICY, self.sft_adapter, target / "base_adapter", self.tokenizer)
            self.model.save_pretrained(target / "value", selected_adapters=[VALUE])
            torch.save(self.value_head.state_dict(), target / "value" / "value_head.pt")
            summary = {"steps": self.step, "weights_digest_per_rank": digests,
                       "value_initialised_from_reward_model": self.value_initialised_from_rm}
            (target / "train_summary.json").write_text(json.dumps(summary, indent=2))
            if self.log_path.is_file():
                plot_log(self.log_path, target / "reward_curve.png")
        self.accelerator.wait_for_everyone()
        return target


def _lora_scale(cfg: dict) -> float:
    return cfg["lora_alpha"] / (math.sqrt(cfg["r"]) if cfg.get("use_rslora") else cfg["r"])


def _plain_lora(cfg: dict) -> bool:
    return not (cfg.get("rank_pattern") or cfg.get("alpha_pattern") or cfg.get("use_dora") or cfg.get("modules_to_save")
                or cfg.get("lora_bias") or cfg.get("bias", "none") != "none")


def combine_lora_adapters(first: tuple[dict, dict], second: tuple[dict, dict], out_dir: str | Path,
                          base_model_name_or_path: str | None = None) -> Path:
    """Write ONE LoRA adapter equal to applying ``first`` then ``second`` (each ``(config dict, state dict)`` with
    peft's saved key names): for every module, A = [A1; A2] and B = [s1 B1, s2 B2] with rank r1 + r2 and scale 1,
    so B A = s1 B1 A1 + s2 B2 A2 exactly. Used to fold the SFT adapter and the RL adapter into one adapter on the
    base model, which every loader of this project (``load_model(base, adapter=...)``) understands."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    (cfg1, sd1), (cfg2, sd2) = first, second
    if not (_plain_lora(cfg1) and _plain_lora(cfg2)):
        raise PPOError("only plain LoRA adapters (no DoRA, rank/alpha patterns, biases or modules_to_save) can be combined")
    s1, s2, r1, r2 = _lora_scale(cfg1), _lora_scale(cfg2), cfg1["r"], cfg2["r"]
    rank = r1 + r2
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in list(sd1) + list(sd2) if ".lora_" in k})
    state = {}
    for mod in modules:
        a1, b1 = sd1.get(f"{mod}.lora_A.weight"), sd1.get(f"{mod}.lora_B.weight")
        a2, b2 = sd2.get(f"{mod}.lora_A.weight"), sd2.get(f"{mod}.lora_B.weight")
        ref_a, ref_b = (a1, b1) if a1 is not None else (a2, b2)
        a1 = a1 if a1 is not None else ref_a.new_zeros(r1, ref_a.shape[1])
        b1 = b1 if b1 is not None else ref_b.new_zeros(ref_b.shape[0], r1)
        a2 = a2 if a2 is not None else ref_a.new_zeros(r2, ref_a.shape[1])
        b2 = b2 if b2 is not None else ref_b.new_zeros(ref_b.shape[0], r2)
        state[f"{mod}.lora_A.weight"] = torch.cat([a1.float(), a2.float()], 0).contiguous()
        state[f"{mod}.lora_B.weight"] = torch.cat([s1 * b1.float(), s2 * b2.float()], 1).contiguous()
    targets = sorted({m.rsplit(".", 1)[-1] for m in modules})
    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM",
                        base_model_name_or_path=base_model_name_or_path or cfg1.get("base_model_name_or_path"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out_dir)
    save_file(state, str(out_dir / "adapter_model.safetensors"))
    return out_dir


def save_policy_adapter(model, adapter_name: str, sft_adapter: str | None, out_dir: str | Path, tokenizer=None) -> Path:
    """Save the trained policy as one LoRA adapter on the base model: the RL adapter alone when training started
    from the base model, else the SFT adapter and the RL adapter combined (:func:`combine_lora_adapters`)."""
    from peft import get_peft_model_state_dict

    out_dir = Path(out_dir)
    if not sft_adapter:
        model.save_pretrained(out_dir, selected_adapters=[adapter_name])
    else:
        from safetensors.torch import load_file

        sft_cfg = json.loads((Path(sft_adapter) / "adapter_config.json").read_text())
        sft_sd = load_file(str(Path(sft_adapter) / "adapter_model.safetensors"))
        rl_cfg = model.peft_config[adapter_name].to_dict()
        rl_sd = {k: v.detach().cpu() for k, v in get_peft_model_state_dict(model, adapter_name=adapter_name).items()}
        combine_lora_adapters((sft_cfg, sft_sd), (rl_cfg, rl_sd), out_dir, sft_cfg.get("base_model_name_or_path"))
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir


def plot_log(log_path: str | Path, png_path: str | Path, keys: Sequence[str] = ("score", "kl", "entropy")) -> Path:
    """Plot the logged curves (one panel per key) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(log_path)
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3))
    for ax, key in zip(axes, keys):
        ax.plot([r["step"] for r in rows], [r.get(key, float("nan")) for r in rows], marker=".")
        ax.set_title(key)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)
    return Path(png_path)


# ------------------------------------------------------------------------------------------------------
# Launcher helpers (shared by PPO and RLOO in baselines/ppo_rlhf.py)
# ------------------------------------------------------------------------------------------------------


@dataclass
class RLHFArguments:
    """What to train and against which reward. Shared by ``--method ppo`` and ``--method rloo``."""

    method: str = field(default="ppo", metadata={"help": "'ppo' (this project's PPOTrainer) or 'rloo' (TRL's RLOOTrainer)."})
    sft_adapter: str | None = field(
        default=None,
        metadata={"help": "SFT LoRA adapter to start from (Alg. 1 lines 2-4, e.g. outputs/citing_demo/sft). It is "
                  "merged into the backbone, so the reference policy (adapters disabled) is the SFT model."},
    )
    reward_model_path: str | None = field(
        default=None,
        metadata={"help": "Reward model trained by baselines/reward_model.py, loaded with RewardScorer (contract C3); "
                  "with PPO it also initialises the value model."},
    )
    reward_function: str | None = field(
        default=None,
        metadata={"help": "Instead of a reward model: 'module:function' importable callable "
                  "f(prompts, completions) -> list[float] (e.g. a rule-based reward)."},
    )

    def __post_init__(self):
        if self.method not in ("ppo", "rloo"):
            raise PPOError(f"--method must be 'ppo' or 'rloo', got {self.method!r}")
        if self.reward_model_path and self.reward_function:
            raise PPOError("give only one of --reward_model_path and --reward_function")
        if not (self.reward_model_path or self.reward_function):
            raise PPOError("--reward_model_path (a trained reward model) or --reward_function (module:function) is required")
        if self.reward_model_path and not Path(self.reward_model_path).exists():
            raise PPOError(f"--reward_model_path {self.reward_model_path!r} does not exist (train it with baselines/reward_model.py)")
        if self.sft_adapter and not (Path(self.sft_adapter) / "adapter_config.json").is_file():
            raise PPOError(f"--sft_adapter {self.sft_adapter!r} is not a LoRA adapter folder (run recipes/sft.py first)")
        if self.reward_function and ":" not in self.reward_function:
            raise PPOError(f"--reward_function must look like 'module:function', got {self.reward_function!r}")


def build_reward_fn(args: RLHFArguments) -> RewardFn:
    """The reward as a callable on (chat-message prompts, answer texts)."""
    if args.reward_function:
        import importlib

        module, _, name = args.reward_function.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise PPOError(f"--reward_function {args.reward_function!r} cannot be imported: {err}") from err
    from citing_trl.baselines.reward_model import RewardScorer  # contract C3 (baselines branch)

    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else None
    return RewardScorer.load(args.reward_model_path, device=device).score


def load_rlhf_policy(model_args, sft_adapter: str | None):
    """Backbone with the SFT adapter merged in, and the tokenizer saved with that adapter (chat template)."""
    from transformers import AutoModelForCausalLM

    from citing_trl.models import load_student_tokenizer, resolve_dtype, resolve_model_path

    path = resolve_model_path(model_args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(model_args.dtype))
    tokenizer = load_student_tokenizer(path, sft_adapter)
    return merge_sft_adapter(model, sft_adapter), tokenizer


def training_prompts(data_args) -> list[list[dict]]:
    from citing_trl.prompts import instruction_messages
    from citing_trl.sft import load_rows

    return [instruction_messages(r["instruction"], r.get("input") or "") for r in load_rows(data_args)]


def run_ppo(rlhf_args: RLHFArguments, data_args, config: PPOConfig, model_args) -> PPOTrainer:
    from citing_trl.sft import lora_config

    reward_fn = build_reward_fn(rlhf_args)
    model, tokenizer = load_rlhf_policy(model_args, rlhf_args.sft_adapter)
    trainer = PPOTrainer(config, model, tokenizer, training_prompts(data_args), reward_fn, lora_config(model_args),
                         reward_model_path=rlhf_args.reward_model_path, sft_adapter=rlhf_args.sft_adapter)
    trainer.train()
    trainer.save_model()
    return trainer
