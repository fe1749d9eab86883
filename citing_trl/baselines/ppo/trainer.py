"""The PPO trainer (see :mod:`citing_trl.baselines.ppo` for the algorithm and its defaults): rollouts through the
project's one generation routine, scoring, GAE, PPO epochs over minibatches, checkpoints and the saved adapters.
The maths live in :mod:`~citing_trl.baselines.ppo.core`, the adapter handling in
:mod:`~citing_trl.baselines.ppo.lora`, the KL coefficient in :mod:`~citing_trl.baselines.ppo.kl`.

Training goes through accelerate like every other trainer of the suite: the backbone with its two LoRA adapters and
the value head form ONE module (:class:`PolicyValueModel`) that ``accelerator.prepare`` wraps together with the
AdamW optimizer (DDP, DeepSpeed or FSDP, whatever the launcher's config says); each minibatch is one forward of
that module under ``accelerator.accumulate`` (``--gradient_accumulation_steps`` minibatches per optimizer step),
``accelerator.backward`` and ``accelerator.clip_grad_norm_``. The rank sync is therefore accelerate's: under DDP
the weights start equal (DDP broadcasts rank 0's) and gradients are averaged in backward; logged statistics are
averaged with ``accelerator.reduce``; ``train_summary.json`` records a digest of every rank's weights."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import matplotlib
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object

from citing_trl.baselines.ppo.config import PPOConfig, PPOError, PPOSamplingArguments, check_ppo_sampling
from citing_trl.baselines.ppo.core import (
    compute_gae,
    entropy_from_logits,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)
from citing_trl.baselines.ppo.kl import KLController
from citing_trl.baselines.ppo.lora import (
    POLICY,
    VALUE,
    activate_adapter,
    add_policy_and_value_adapters,
    save_policy_adapter,
)
from citing_trl.distributed import check_engine, report_engine, requested_engine
from citing_trl.generation import DecodingConfig, generate, render_prompt
from citing_trl.jsonl import read_jsonl

logger = logging.getLogger(__name__)

RewardFn = Callable[[list, list[str]], Sequence[float]]



class ValueHead(torch.nn.Module):
    def __init__(self, hidden_size: int, init_std: float = 0.0):
        super().__init__()
        self.summary = torch.nn.Linear(hidden_size, 1, bias=True)
        torch.nn.init.normal_(self.summary.weight, std=init_std) if init_std > 0 else torch.nn.init.zeros_(self.summary.weight)
        torch.nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)



def gather_answer(per_position: torch.Tensor, starts: torch.Tensor, steps: int) -> torch.Tensor:
    """Pick positions starts + t, t < steps (the states that predict answer token t)."""
    index = (starts[:, None] + torch.arange(steps, device=starts.device)[None, :]).clamp(max=per_position.shape[1] - 1)
    if per_position.dim() == 3:
        index = index[..., None].expand(-1, -1, per_position.shape[-1])
    return torch.gather(per_position, 1, index)


class PolicyValueModel(torch.nn.Module):
    """The one trainable module accelerate prepares: the peft model (policy adapter :data:`POLICY`, value adapter
    :data:`VALUE`, reference = adapters disabled) and the value head. ``forward`` returns, at the answer positions,

    * ``mode="policy"``: the policy's logits; ``"reference"``: the logits with the adapters disabled;
    * ``"value"``: the value head on the value adapter's last hidden state;
    * ``"train"``: ``(policy logits, values)`` in ONE call, so that a minibatch is one forward and one backward of
      the wrapped module (what DDP's gradient hooks and FSDP's sharding expect)."""

    def __init__(self, model, value_head: torch.nn.Module):
        super().__init__()
        self.model = model
        self.value_head = value_head

    def forward(self, input_ids, attention_mask, starts, steps: int, mode: str = "train"):
        if mode == "policy":
            return self._logits(input_ids, attention_mask, starts, steps)
        if mode == "reference":
            with self.model.disable_adapter():
                return gather_answer(self.model(input_ids=input_ids, attention_mask=attention_mask).logits, starts, steps)
        if mode == "value":
            return self._values(input_ids, attention_mask, starts, steps)
        if mode == "train":
            logits = self._logits(input_ids, attention_mask, starts, steps)
            return logits, self._values(input_ids, attention_mask, starts, steps)
        raise ValueError(f"unknown mode {mode!r}")

    def _logits(self, input_ids, attention_mask, starts, steps):
        activate_adapter(self.model, POLICY)
        return gather_answer(self.model(input_ids=input_ids, attention_mask=attention_mask).logits, starts, steps)

    def _values(self, input_ids, attention_mask, starts, steps):
        activate_adapter(self.model, VALUE)
        try:
            decoder = self.model.get_base_model().get_decoder()
            hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        except (AttributeError, NotImplementedError):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
            hidden = out.hidden_states[-1]
        activate_adapter(self.model, POLICY)
        return self.value_head(gather_answer(hidden, starts, steps))


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


@contextlib.contextmanager
def fsdp2_full_weights(module: torch.nn.Module, writeback: bool = False):
    """FSDP2 (``fully_shard``): every sharded group of ``module`` all-gathered while inside (every rank enters
    together), so a generate() or a save on one rank sees whole tensors; resharded after. FSDP2 does not copy
    changes to the gathered tensors back to the shards, so ``writeback`` (a resume) is refused."""
    from torch.distributed.fsdp import FSDPModule

    if writeback:
        raise PPOError("resuming PPO from a checkpoint is not supported under FSDP2; resume under DDP or DeepSpeed")
    groups = [m for m in module.modules() if isinstance(m, FSDPModule)]
    for m in groups:
        m.set_reshard_after_forward(False)  # generate()'s forwards keep the gathered weights instead of resharding
        m.unshard()
    try:
        yield
    finally:
        for m in groups:
            m.reshard()
            m.set_reshard_after_forward(True)


def _whole(p: torch.Tensor) -> torch.Tensor:
    """A parameter as one tensor: FSDP2's DTensor shards gathered (a collective), anything else as is."""
    return p.full_tensor() if hasattr(p, "full_tensor") else p


class PPOTrainer:
    """PPO on a LoRA policy. ``model`` is a causal LM holding the SFT weights (see :func:`merge_sft_adapter`);
    the trainer adds the ``default`` (policy) and ``value`` LoRA adapters from ``peft_config``.

    ``reward_fn(prompts, completions) -> list[float]`` scores whole answers: prompts are the items of
    ``prompts`` as given (chat message lists or strings), completions the decoded answers. ``sampling`` says how
    rollouts are sampled (default ``PPOSamplingArguments().build()``); it must not truncate the distribution
    (:func:`~citing_trl.baselines.ppo.config.check_ppo_sampling`), so that ``logits / temperature`` IS the
    sampling distribution.
    """

    _name = "PPO"

    def __init__(self, config: PPOConfig, model, tokenizer, prompts: Sequence, reward_fn: RewardFn, peft_config,
                 reward_model_path: str | None = None, accelerator=None, sft_adapter: str | None = None,
                 sampling: DecodingConfig | None = None):
        if not prompts:
            raise PPOError("no training prompts (the data set is empty)")
        self.config = config
        self.sampling = sampling if sampling is not None else PPOSamplingArguments().build()
        check_ppo_sampling(self.sampling)
        self.sft_adapter = sft_adapter
        # cpu=True would turn DeepSpeed off (accelerate runs DeepSpeed only for cpu=False, also on a CPU box)
        cpu = (config.use_cpu or not torch.cuda.is_available()) and requested_engine() != "DEEPSPEED"
        self.accelerator = accelerator or Accelerator(cpu=cpu,
                                                      gradient_accumulation_steps=config.gradient_accumulation_steps)
        if self.accelerator.gradient_accumulation_steps != config.gradient_accumulation_steps:
            raise PPOError(f"--gradient_accumulation_steps {config.gradient_accumulation_steps} differs from the "
                           f"accelerator's ({self.accelerator.gradient_accumulation_steps}); set it in one place")
        check_engine(self.accelerator)
        self.tokenizer = tokenizer
        self.prompts = list(prompts)
        self.reward_fn = reward_fn
        self.device = self.accelerator.device
        torch.manual_seed(config.seed)
        self.model, rm_head = add_policy_and_value_adapters(model, peft_config, reward_model_path)
        self.value_head = ValueHead(self.model.get_base_model().config.hidden_size, config.value_head_init_std)
        self.value_initialised_from_rm = rm_head is not None
        if rm_head is not None:
            with torch.no_grad():
                self.value_head.summary.weight.copy_(rm_head[:1].to(self.value_head.summary.weight.dtype))
        self._activate(POLICY)
        module = PolicyValueModel(self.model, self.value_head).to(self.device)
        module.eval()  # dropout off for every forward (trl 1.12 disables dropout too): ratios start at 1
        self.trainable = [p for p in module.parameters() if p.requires_grad]  # LoRA adapters, then the value head
        optimizer = torch.optim.AdamW(self.trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        if plugin is not None and plugin.deepspeed_config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
            # there is no dataloader for DeepSpeed to read the micro-batch from: it is the PPO minibatch
            plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.per_device_mini_batch_size
        # DDP broadcasts rank 0's weights here and averages gradients in every backward from now on
        self.wrapped, self.optimizer = self.accelerator.prepare(module, optimizer)
        # FSDP2 replaces the parameters by sharded ones: read the trainable tensors from what is trained
        self.trainable = [p for p in self.wrapped.parameters() if p.requires_grad]
        self.kl_ctl = KLController(config.kl_coef, config.kl_target, config.kl_horizon)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.step = 0
        self.output_dir = Path(config.output_dir)
        self.log_path = self.output_dir / "ppo_log.jsonl"
        self.log_history: list[dict] = []

    # ---- plumbing -------------------------------------------------------------------------------------
    def _activate(self, adapter: str):
        activate_adapter(self.model, adapter)

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @contextlib.contextmanager
    def full_weights(self, writeback: bool = False):
        """Every trainable tensor whole on this rank while inside: a no-op for one process, DDP and ZeRO-1/2 (their
        weights are never sharded); gathers ZeRO-3 / FSDP1 / FSDP2 shards."""
        dist = self.accelerator.distributed_type
        if dist == DistributedType.FSDP and self.accelerator.is_fsdp2:
            with fsdp2_full_weights(self.wrapped, writeback=writeback):
                yield
        elif dist == DistributedType.FSDP:
            from torch.distributed.fsdp import FullyShardedDataParallel

            with FullyShardedDataParallel.summon_full_params(self.wrapped, writeback=writeback):
                yield
        elif dist == DistributedType.DEEPSPEED and self.accelerator.state.deepspeed_plugin.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(self.wrapped.parameters()),
                                                   modifier_rank=0 if writeback else None):
                yield
        else:
            yield

    def weights_digest(self) -> float:
        """Sum of |w| over the trainable tensors: a cheap fingerprint to check that ranks agree."""
        with self.full_weights():
            return float(sum(_whole(p).detach().double().abs().sum() for p in self.trainable))

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
        ids = self.tokenizer(render_prompt(self.tokenizer, prompt), add_special_tokens=False)["input_ids"]
        return ids[-self.sampling.max_prompt_tokens :] if self.sampling.max_prompt_tokens else ids

    # ---- forwards -----------------------------------------------------------------------------------------
    _gather_answer = staticmethod(gather_answer)

    def _forward(self, batch: Rollout | dict, mode: str):
        """One call of the prepared module on ``batch`` (see :class:`PolicyValueModel` for the modes)."""
        return self.wrapped(batch["input_ids"], batch["attention_mask"], batch["starts"], batch["answer_ids"].shape[1],
                            mode=mode)

    def _policy_logits(self, batch: Rollout | dict, reference: bool = False) -> torch.Tensor:
        return self._forward(batch, "reference" if reference else "policy")

    def _values(self, batch) -> torch.Tensor:
        return self._forward(batch, "value")

    # ---- one PPO iteration -----------------------------------------------------------------------------
    def rollout_generation_config(self, step: int) -> DecodingConfig:
        """The sampling settings of ``step``'s rollouts on this rank: ``sampling``, sampled, seeded by step and rank."""
        seed = self.config.seed + 7919 * step + 104729 * self.accelerator.process_index
        return replace(self.sampling, do_sample=True, top_p=1.0, seed=seed)

    def rollout(self, step: int) -> tuple[dict, dict]:
        cfg, temperature = self.config, self.sampling.temperature
        prompts = self.prompts_for_step(step)
        self._activate(POLICY)
        with self.full_weights():  # generate() runs on the unwrapped peft model
            gens = generate(self.model, self.tokenizer, prompts, self.rollout_generation_config(step),
                            desc=f"PPO step {step} rollouts")
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
            logprobs = logprobs_from_logits(logits, batch["answer_ids"], temperature) * m
            entropy = masked_mean(entropy_from_logits(logits, temperature), m)
            del logits
            ref_logprobs = logprobs_from_logits(self._policy_logits(batch, reference=True), batch["answer_ids"],
                                                temperature) * m
            values = self._values(batch) * m
        kl_coef = self.kl_ctl.value
        rewards, kl = token_rewards(scores, logprobs, ref_logprobs, m, kl_coef)
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
            "non_score_reward": float((-kl_coef * kl_seq).mean()),
            "kl_coef": kl_coef,
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
                with self.accelerator.accumulate(self.wrapped):  # an optimizer step every gradient_accumulation_steps
                    logits, new_values = self._forward(mb, "train")
                    new_logprobs = logprobs_from_logits(logits, mb["answer_ids"], self.sampling.temperature)
                    pg_loss, pg_stats = policy_loss(new_logprobs, mb["logprobs"], mb["advantages"], m, cfg.cliprange)
                    vf_loss, vf_clipfrac = value_loss(new_values, mb["values"], mb["returns"], m, cfg.cliprange_value)
                    loss = pg_loss + cfg.vf_coef * vf_loss
                    self.accelerator.backward(loss)  # divided by gradient_accumulation_steps; DDP averages over ranks
                    if self.accelerator.sync_gradients and cfg.max_grad_norm > 0:
                        self.accelerator.clip_grad_norm_(self.wrapped.parameters(), cfg.max_grad_norm)
                    self.optimizer.step()  # skipped by accelerate between accumulation boundaries
                    self.optimizer.zero_grad(set_to_none=True)
                for k, v in {"policy_loss": pg_loss.detach(), "value_loss": vf_loss.detach(),
                             "clipfrac": pg_stats["clipfrac"], "approx_kl": pg_stats["approx_kl"],
                             "value_clipfrac": vf_clipfrac}.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                count += 1
        return {k: v / count for k, v in sums.items()}

    # ---- checkpoints -----------------------------------------------------------------------------------
    def _checkpoints(self) -> list[Path]:
        found = [p for p in self.output_dir.glob("checkpoint-*") if (p / "state.pt").is_file()
                 and (p / "optimizer-0.pt").is_file()]
        return sorted(found, key=lambda p: int(p.name.split("-")[-1]))

    def save_checkpoint(self):
        """``state.pt`` (trainable tensors, step, KL coefficient, RNG, settings) from rank 0 and
        ``optimizer-<rank>.pt`` from every rank (a sharded optimizer, ZeRO or FSDP, has one part per rank)."""
        target = self.output_dir / f"checkpoint-{self.step}"
        tmp = self.output_dir / f".tmp-checkpoint-{self.step}"
        if self.accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        torch.save(self.optimizer.state_dict(), tmp / f"optimizer-{self.accelerator.process_index}.pt")
        with self.full_weights():
            trainable = [p.detach().cpu().clone() for p in self.trainable]
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            torch.save({
                "step": self.step,
                "trainable": trainable,
                "kl_coef": self.kl_ctl.value,
                "torch_rng": torch.get_rng_state(),
                "config": self.config.to_dict(),
                "sampling": asdict(self.sampling),
            }, tmp / "state.pt")
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)  # a checkpoint folder exists only once complete
            limit = self.config.save_total_limit
            for old in self._checkpoints()[: -limit] if limit else []:
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
        with torch.no_grad(), self.full_weights(writeback=True):
            for p, saved in zip(self.trainable, state["trainable"]):
                p.copy_(saved.to(p.device, p.dtype))
        own = checkpoints[-1] / f"optimizer-{self.accelerator.process_index}.pt"
        optimizer_state = torch.load(own if own.is_file() else checkpoints[-1] / "optimizer-0.pt", map_location="cpu",
                                     weights_only=False)  # DDP: every rank's optimizer state is the same
        self.optimizer.load_state_dict(optimizer_state)
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.kl_ctl.value = float(state.get("kl_coef", self.config.kl_coef))
        if self.log_path.is_file():  # drop rows logged after the checkpoint: they will be redone
            rows = read_jsonl(self.log_path)  # tolerant: a kill can tear the last line
            self.log_history = [r for r in rows if r.get("step", 0) <= self.step]
            if self.accelerator.is_main_process:
                self.log_path.write_text("".join(json.dumps(r) + "\n" for r in self.log_history))
        self.accelerator.wait_for_everyone()
        logger.info("resumed from %s at step %d", checkpoints[-1], self.step)
        return True

    def mean_across_ranks(self, values: dict[str, float]) -> dict[str, float]:
        """Each logged statistic averaged over ranks (``accelerator.reduce``)."""
        if self.world == 1:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        return {k: float(v) for k, v in zip(keys, self.accelerator.reduce(t, reduction="mean").tolist())}

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
            stats = self.mean_across_ranks(stats)
            # the coefficient of the NEXT rollout; every rank moves it by the same rank-averaged KL
            self.kl_ctl.update(stats["kl"], n_steps=cfg.per_device_rollout_batch_size * self.world)
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
        report_engine(self.accelerator, self.wrapped)
        digests = gather_object([self.weights_digest()])
        with self.full_weights():
            self._write_outputs(target, digests)
        self.accelerator.wait_for_everyone()
        return target

    def _write_outputs(self, target: Path, digests: list[float]) -> None:
        if self.accelerator.is_main_process:
            target.mkdir(parents=True, exist_ok=True)
            self.model.save_pretrained(target / "adapter", selected_adapters=[POLICY])
            self.tokenizer.save_pretrained(target / "adapter")
            save_policy_adapter(self.model, POLICY, self.sft_adapter, target / "base_adapter", self.tokenizer)
            self.model.save_pretrained(target / "value", selected_adapters=[VALUE])
            torch.save(self.value_head.state_dict(), target / "value" / "value_head.pt")
            summary = {"steps": self.step, "weights_digest_per_rank": digests,
                       "value_initialised_from_reward_model": self.value_initialised_from_rm,
                       "kl_coef_final": self.kl_ctl.value, "distributed_type": str(self.accelerator.distributed_type),
                       "num_processes": self.world}
            (target / "train_summary.json").write_text(json.dumps(summary, indent=2))
            if self.log_path.is_file():
                plot_log(self.log_path, target / "reward_curve.png")



def plot_log(log_path: str | Path, png_path: str | Path, keys: Sequence[str] = ("score", "kl", "entropy")) -> Path:
    """Plot the logged curves (one panel per key) against the step."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the backend

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

