"""The PPO maths as pure tensor functions (unit-tested against hand computations): per-token rewards with the
k1 KL penalty, GAE, whitening, the clipped policy and value losses, and log-probs / entropy at the sampling
temperature. Nothing here knows about models, adapters or ranks."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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

