"""Baselines the paper compares CITING with (§4.3), plus DPO: reward model, RRHF, RAFT, DPO (and PPO-RLHF/RLOO
in ``ppo``). Every method starts from the SFT adapter of Algorithm 1 lines 2-4 and generates through
:mod:`citing_trl.generation`. Imports are lazy so that ``import citing_trl.baselines`` stays cheap.
"""

from citing_trl import lazy_exports

_EXPORTS = {
    "PreferenceArguments": "citing_trl.baselines.preferences",
    "PreferenceError": "citing_trl.baselines.preferences",
    "load_preferences": "citing_trl.baselines.preferences",
    "RewardModelConfig": "citing_trl.baselines.reward_model",
    "RewardScorer": "citing_trl.baselines.reward_model",
    "train_reward_model": "citing_trl.baselines.reward_model",
    "RRHFConfig": "citing_trl.baselines.rrhf",
    "RRHFTrainer": "citing_trl.baselines.rrhf",
    "RAFTConfig": "citing_trl.baselines.raft",
    "RAFTTrainer": "citing_trl.baselines.raft",
    "run_dpo": "citing_trl.baselines.dpo",
    "PPOConfig": "citing_trl.baselines.ppo.config",
    "PPOTrainer": "citing_trl.baselines.ppo.trainer",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
