"""PPO-RLHF baseline (paper §4.3): a LoRA policy trained with PPO against a reward model.

Written for this project (TRL removed its PPOTrainer after trl 1.12). The algorithm follows the usual RLHF
recipe (Ziegler et al. 2019; Ouyang et al. 2022), with defaults taken from trl 1.12's experimental PPO unless a
field's help says otherwise:

* **Policy**: a LoRA adapter (``default``) on the SFT weights. The SFT adapter is merged into the backbone
  first, so the **reference model is the same backbone with the adapters disabled** - no second copy.
* **Value model**: a second LoRA adapter (``value``) on the same backbone plus a scalar head on the last
  hidden state. When the reward model is a LoRA adapter of the same backbone it initialises both (its LoRA
  weights and its ``score`` head), as trl 1.12 and OpenRLHF initialise the critic from the reward model.
* **Rollouts** are sampled through :func:`citing_trl.generation.generate` (the one generation routine) with the
  settings of :data:`~citing_trl.baselines.ppo.config.PPOSamplingArguments` (``--sample_*`` flags) at
  ``sample_temperature`` with no top-k/top-p truncation (``sample_top_k: 0``); every log-prob (old policy, new
  policy, reference) is computed from ``logits / temperature`` so that the ratio and the KL refer to the
  distribution that was sampled.
* **Rewards**: the reward function scores the whole answer (a reward model reads it up to its last token);
  ``missing_eos_penalty`` is subtracted when the answer hit ``sample_max_new_tokens`` without EOS. Per token the
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

Layout: ``config`` (:class:`PPOConfig`, ``PPOSamplingArguments``, :class:`RLHFArguments`, :class:`PPOError`),
``core`` (the maths as pure functions), ``lora`` (one backbone as policy, value model and reference; merging
and combining adapters), ``sync`` (the hand-made rank sync), ``trainer`` (:class:`PPOTrainer`), ``launch``
(reward function, policy loading and :func:`run_ppo`, shared with RLOO). Names are exported lazily from this
package.
"""

from citing_trl import lazy_exports

_MODULES = {
    "config": ("PPOConfig", "PPOError", "PPOSamplingArguments", "RLHFArguments", "check_ppo_sampling"),
    "core": ("compute_gae", "entropy_from_logits", "logprobs_from_logits", "masked_mean", "masked_whiten",
             "policy_loss", "token_rewards", "value_loss"),
    "lora": ("POLICY", "VALUE", "activate_adapter", "add_policy_and_value_adapters", "combine_lora_adapters",
             "merge_sft_adapter", "reward_adapter_state", "save_policy_adapter"),
    "trainer": ("PPOTrainer", "RewardFn", "Rollout", "ValueHead", "plot_log"),
    "launch": ("build_reward_fn", "load_rlhf_policy", "run_ppo", "training_prompts"),
}
_EXPORTS = {name: f"{__name__}.{module}" for module, names in _MODULES.items() for name in names}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
