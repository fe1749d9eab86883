"""The baselines under several processes (``accelerate launch --num_processes N``): split sampling work between
the ranks, join it again, check that the ranks end with the same weights, and close the process group.

RAFT and RRHF sample answers before they train. Each rank samples its own contiguous slice of the prompts
(:func:`shard`), the slices are joined in input order on every rank (:func:`gather`), and every rank hands
the SAME joined set to its Trainer, whose distributed sampler then gives each rank a different part of every
batch while DDP averages the gradients. (Giving each rank only its own slice instead would shard twice, since
the Trainer's sampler splits whatever it is given, and the ranks could count different numbers of steps and
wait for each other forever.)

:class:`RankDigestCallback` makes "identical weights on every rank after training" checkable: at the end of
training each rank hashes its trainable parameters, and the main process writes every rank's hash to
``<output_dir>/rank_digests.json``. A single process writes nothing.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from transformers import TrainerCallback

from citing_trl.run_layout import own_file

logger = logging.getLogger(__name__)

DIGEST_FILE = "rank_digests.json"


def shard(items: list, state: PartialState | None = None) -> tuple[int, list]:
    """``(start, part)``: this rank's contiguous slice of ``items`` and where it starts. The slices of the
    ranks are disjoint, cover ``items``, and differ in size by at most one; rank order is input order."""
    state = state or PartialState()
    size, extra = divmod(len(items), state.num_processes)
    rank = state.process_index
    start = rank * size + min(rank, extra)
    return start, list(items[start : start + size + (1 if rank < extra else 0)])


def gather(part: list) -> list:
    """Every rank's ``part`` joined in rank order, on every rank (with :func:`shard`: input order). A single
    process gets ``part`` back."""
    if PartialState().num_processes <= 1:
        return list(part)
    return list(gather_object(list(part)))


def part_path(path: str | Path, state: PartialState | None = None) -> Path:
    """This rank's own file beside ``path`` (``x.jsonl`` -> ``x.rank<r>.jsonl``); ``path`` itself for one process."""
    state = state or PartialState()
    return own_file(path, state.process_index, state.num_processes)


def weights_digest(model) -> str:
    """SHA-256 of the trainable parameters (by name, in name order): equal on two ranks iff their weights are."""
    digest = hashlib.sha256()
    for name, param in sorted((n, p) for n, p in model.named_parameters() if p.requires_grad):
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class RankDigestCallback(TrainerCallback):
    """At the end of training, gather every rank's :func:`weights_digest`; the main process writes them to
    ``<output_dir>/rank_digests.json`` (``{"weights_digest_per_rank": [...], "identical": bool}``) and warns
    when the ranks disagree. Does nothing in a single process."""

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if args.world_size <= 1 or model is None:
            return
        digests = gather_object([weights_digest(model)])
        if state.is_world_process_zero:
            out = Path(args.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            identical = len(set(digests)) == 1
            (out / DIGEST_FILE).write_text(json.dumps({"weights_digest_per_rank": digests, "identical": identical},
                                                      indent=2))
            if not identical:
                logger.warning("the %d ranks end training with different weights: %s", len(digests), digests)


def end_ranks() -> None:
    """Close the process group once a launcher's work is done; call it after ``main`` has returned, so that no
    trainer holds the group any more. A no-op for one process.

    Left to interpreter shutdown, a gloo rank can abort in C++ teardown after its work is done. Destroyed while a
    DDP model still references it, the group is torn down later from that model's destructor, holding the GIL
    while it joins gloo's worker thread, which may itself wait for the GIL to release Python tensors of the last
    collectives: a hang seen here. So: collect the trainers first (their DDP reducers go while the group lives),
    then two barriers (while the second waits without the GIL, the worker finishes off the first, which holds
    the Python tensors of earlier collectives), then destroy."""
    state = PartialState()
    if state.num_processes <= 1 or not torch.distributed.is_initialized():
        return
    gc.collect()
    state.wait_for_everyone()
    state.wait_for_everyone()
    state.destroy_process_group()
