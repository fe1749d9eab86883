"""PPO-RLHF baseline (paper §4.3): a LoRA policy trained with PPO against a reward model.

Written for this project (TRL removed its PPOTrainer after trl 1.12). The algorithm follows the usual RLHF
recipe (Ziegler et al. 2019; Ouyang et al. 2022), with defaults taken from trl 1.12's experimental PPO unless a
field's help says otherwise:

* **Policy**: a LoRA adapter (``default``) on the SFT weights. The SFT adapter is merged into the backbone
  first, so the **reference model is the same backbone with the adapters disabled** - no second copy.
* **Value model**: a second LoRA adapter (``value``) on the same backbone plus a scalar head on the last
  hidden state. When the reward model is a LoRA adapter of the same backbone it initialises both (its LoRA
  weights and its ``score`` head), as trl 1.12 and OpenRLHF initialise the critic from the reward model; with
  ``--reward gold`` or a reward function there is no reward model, so both start fresh (a new LoRA adapter and
  a head of zeros, or ``value_head_init_std``).
* **Rollouts** are sampled through :func:`citing_trl.generation.generate` (the one generation routine) with the
  settings of :data:`~citing_trl.baselines.ppo.config.PPOSamplingArguments` (``--sample_*`` flags) at
  ``sample_temperature`` with no top-k/top-p truncation (``sample_top_k: 0``); every log-prob (old policy, new
  policy, reference) is computed from ``logits / temperature`` so that the ratio and the KL refer to the
  distribution that was sampled.
* **Rewards**: the reward function scores the whole answer: a reward model (``--reward model``; it reads the answer
  up to its last token), a ``module:function``, or the verifiable gold reward (``--reward gold``,
  :class:`citing_trl.reward.GoldScorer`, 1 when the answer is right under its row's primary gold metric);
  ``missing_eos_penalty`` is subtracted when the answer hit ``sample_max_new_tokens`` without EOS. Per token the
  reward is ``-beta * (log pi - log pi_ref)`` (the k1 estimator), and the score is added at the last token. beta is
  ``kl_coef``, fixed by default, or trlx's adaptive controller with ``kl_target`` / ``kl_horizon``
  (:mod:`~citing_trl.baselines.ppo.kl`); it is logged every step as ``kl_coef``.
* **Advantages**: GAE(gamma, lam) on the per-token rewards and values, whitened over the batch's tokens.
* **Losses**: PPO clipped surrogate (``cliprange``) + ``vf_coef`` x clipped value loss (``cliprange_value``),
  token-level means, ``num_ppo_epochs`` passes over shuffled minibatches of every rollout batch.
* **Distributed**: through accelerate: the backbone with both adapters and the value head is one module that
  ``accelerator.prepare`` wraps with the optimizer; losses go through ``accelerator.backward`` under
  ``accelerator.accumulate`` (``gradient_accumulation_steps`` minibatches per optimizer step) and clipping through
  ``accelerator.clip_grad_norm_``, so the launcher's accelerate config (DDP, DeepSpeed ZeRO, FSDP) applies as for
  every other trainer. Each rank samples its own prompts. Two DDP ranks are tested (``cpu_2proc.yaml``), and
  ZeRO-2/ZeRO-3 (``tests/test_engines.py``); FSDP2's gather is not launched by a test.
* **Outputs**: ``adapter/`` is the PPO adapter (it applies to the SFT-merged backbone); ``base_adapter/`` is the
  same policy as ONE LoRA adapter on the base model (SFT and PPO adapters concatenated, exact), loadable with
  ``citing_trl.models.load_model(base, adapter=...)``; ``ppo_log.jsonl`` one row per step; ``reward_curve.png``.
* **Resume**: ``<output_dir>/checkpoint-<step>/`` holds the trainable tensors, step, KL coefficient and RNG state
  (``state.pt``) and each rank's optimizer state (``optimizer-<rank>.pt``); rerunning the same command continues from the newest one. Rollouts are drawn in a fixed,
  seeded order indexed by the step, so a resumed run sees the prompts the uninterrupted run would have.

Layout: ``config`` (:class:`PPOConfig`, ``PPOSamplingArguments``, :class:`RLHFArguments`, :class:`PPOError`),
``core`` (the maths as pure functions), ``kl`` (the fixed or adaptive KL coefficient), ``lora`` (one backbone as
policy, value model and reference; merging and combining adapters), ``trainer`` (:class:`PPOTrainer`), ``launch``
(reward function, policy loading and :func:`run_ppo`, shared with RLOO). Names are exported lazily from this
package.
"""

from citing_trl import lazy_exports

_MODULES = {
    "config": ("PPOConfig", "PPOError", "PPOSamplingArguments", "RLHFArguments", "check_ppo_sampling",
               "check_reward_settings"),
    "kl": ("KLController",),
    "core": ("compute_gae", "entropy_from_logits", "logprobs_from_logits", "masked_mean", "masked_whiten",
             "policy_loss", "token_rewards", "value_loss"),
    "lora": ("POLICY", "VALUE", "activate_adapter", "add_policy_and_value_adapters", "combine_lora_adapters",
             "merge_sft_adapter", "reward_adapter_state", "save_policy_adapter"),
    "trainer": ("PPOTrainer", "PolicyValueModel", "RewardFn", "Rollout", "ValueHead", "plot_log"),
    "launch": ("build_reward_fn", "load_rlhf_policy", "run_ppo", "training_prompts"),
}
_EXPORTS = {name: f"{__name__}.{module}" for module, names in _MODULES.items() for name in names}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
