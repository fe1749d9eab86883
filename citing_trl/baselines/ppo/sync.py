"""Keeping PPO's ranks in step by hand (what DDP would do): the trainable tensors (two LoRA adapters and the
value head, a few MB) start equal on every rank, their gradients are averaged with one all-reduce before every
optimizer step, and logged statistics are averaged over ranks. With one process every helper is a no-op."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def broadcast_from_main(tensors: Sequence[torch.Tensor], world: int) -> None:
    """Copy rank 0's values of ``tensors`` to every rank."""
    if world > 1:
        for p in tensors:
            torch.distributed.broadcast(p.data, src=0)


def average_gradients(tensors: Sequence[torch.Tensor], world: int) -> None:
    """Replace each tensor's gradient by its mean over ranks (a missing gradient counts as zeros), in one
    all-reduce of the flattened gradients."""
    if world == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in tensors]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for p in tensors:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def mean_across_ranks(values: dict[str, float], world: int, device) -> dict[str, float]:
    """Each statistic averaged over ranks."""
    if world == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return {k: float(v) / world for k, v in zip(keys, t.tolist())}


def gather_objects(obj, world: int) -> list:
    """``obj`` from every rank, in rank order."""
    if world == 1:
        return [obj]
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, obj)
    return gathered
