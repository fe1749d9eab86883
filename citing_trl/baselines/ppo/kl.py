"""The KL coefficient beta of PPO's per-token penalty: fixed (the default) or adapted toward a target KL.

The adaptive rule is the one of Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences", §2.2),
which trlx (the library the CITING paper's PPO ran on) implements as ``AdaptiveKLController``:

    e_t      = clip(KL_t / KL_target - 1, -0.2, 0.2)        (proportional error, clipped)
    beta_t+1 = beta_t * (1 + e_t * n_steps / horizon)

where ``KL_t`` is the mean over the rollout batch of each answer's summed per-token KL and ``n_steps`` the number
of rollouts the update accounts for. Where this project differs from trlx (stated in docs/baselines.md too):

* the update runs ONCE after each rollout batch with ``n_steps`` = the rollouts of that batch over all ranks
  (Ziegler et al.'s schedule); trlx calls it after every training minibatch of the rollout store with
  ``n_steps = train.batch_size``, i.e. the same total ``n_steps`` per rollout round split into several compounded
  factors (equal to first order in ``e_t * n_steps / horizon``);
* ``KL_t`` is the k1 estimate (sum of log pi - log pi_ref over the answer, the quantity that is penalised and
  logged as ``kl``), as in Ziegler et al.'s code; recent trlx measures the controller's KL with the k3 estimator
  (exp(r) - 1 - r) while penalising with k1.
"""

from __future__ import annotations

from dataclasses import dataclass

PROPORTIONAL_ERROR_CLIP = 0.2


@dataclass
class KLController:
    """beta and how it moves: ``target`` None keeps it fixed; else the adaptive rule above."""

    value: float
    target: float | None = None
    horizon: int = 10000

    @property
    def adaptive(self) -> bool:
        return self.target is not None

    def update(self, current_kl: float, n_steps: int) -> float:
        """Move beta after one rollout batch whose mean summed KL was ``current_kl``; returns the new beta."""
        if self.target is None:
            return self.value
        error = min(max(current_kl / self.target - 1.0, -PROPORTIONAL_ERROR_CLIP), PROPORTIONAL_ERROR_CLIP)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value
