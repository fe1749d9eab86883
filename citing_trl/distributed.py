"""Checks for runs that span several processes or machines.

CITING's ranks exchange work through files in ``output_dir``: every rank writes its share of the student's
answers (``round_k/rollouts.rank{r}.jsonl``), the main process alone talks to the teacher and writes the
revisions, and every rank then reads them to train. On several machines ``output_dir`` must therefore be one
shared folder (NFS, Lustre, a mounted bucket with POSIX semantics, ...) that every node sees at the same
path. :func:`check_shared_output_dir` proves it before any work starts.

Ranks must also agree on failure: a step that only the main process runs (asking the teacher, designing the
rubric, joining part files) and that fails on a user error must stop every rank, not leave the others waiting
in a collective. :func:`on_main` runs such a step and shares its outcome; the other ranks raise
:class:`MainProcessError`, which :func:`citing_trl.cli.run_main` turns into exit status 2 without printing
(rank 0 prints the one ``error:`` line).
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

from citing_trl.errors import UserError


class SharedDirError(UserError, RuntimeError):
    """The ranks do not share the output folder (each needs to see what the main process writes)."""


class MainProcessError(UserError, RuntimeError):
    """Raised on the other ranks when a step run by the main process stopped on a user error (rank 0 reports it)."""


def on_main(fn: Callable[[], object], state=None, skip: bool = False) -> None:
    """Run ``fn`` on the main process only (unless ``skip``) while every other rank waits; then every rank fails
    together or goes on together. A :class:`UserError` raised by ``fn`` is raised again on the main process and
    as :class:`MainProcessError` (same message) on the others; any other exception propagates on the main
    process and the others raise a RuntimeError, so no rank is left waiting. With one process: ``fn()``."""
    if state is None:
        from accelerate import PartialState

        state = PartialState()
    error: BaseException | None = None
    outcome = None
    if state.is_main_process and not skip:
        try:
            fn()
        except Exception as err:  # shared with the other ranks below, then raised again here
            error = err
            outcome = ("user" if isinstance(err, UserError) else "bug", " ".join(str(err).split()))
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        outcome = broadcast_object_list([outcome], from_process=0)[0]  # also the barrier
    if error is not None:
        raise error
    if outcome is not None:
        kind, message = outcome
        if kind == "user":
            raise MainProcessError(message)
        raise RuntimeError(f"the main process failed (see its traceback): {message}")


def check_shared_output_dir(output_dir: str | Path) -> None:
    """Raise :class:`SharedDirError` on every rank unless every rank sees the file the main process writes into
    ``output_dir``. A no-op for a single process."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list, gather_object

    state = PartialState()
    if state.num_processes <= 1:
        return
    out = Path(output_dir)
    token = [None]
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        name = f".citing-shared-check-{uuid.uuid4().hex}"
        (out / name).write_text(name)
        token = [name]
    token = broadcast_object_list(token, from_process=0)
    name = token[0]
    path = out / name
    try:
        seen = path.read_text() == name
    except OSError:
        seen = False
    report = gather_object([(state.process_index, socket.gethostname(), seen)])
    state.wait_for_everyone()
    if state.is_main_process:
        path.unlink(missing_ok=True)
    blind = [(rank, host) for rank, host, ok in report if not ok]
    if blind:
        ranks = ", ".join(f"rank {rank} on {host}" for rank, host in blind)
        raise SharedDirError(
            f"output_dir {str(out)!r} is not shared between the processes: {ranks} cannot see the file that rank 0 "
            f"(on {socket.gethostname() if state.is_main_process else report[0][1]}) wrote there. CITING's ranks "
            "exchange rollouts and revisions through this folder: put it on a filesystem every node mounts at the "
            "same path (NFS, Lustre, ...)."
        )


class EngineError(UserError, RuntimeError):
    """The launcher's accelerate config asks for DeepSpeed or FSDP, but accelerate set up another engine."""


# what ``accelerate launch --config_file X`` exports for the engine X asks for
ENGINE_REQUESTS = {"DEEPSPEED": "ACCELERATE_USE_DEEPSPEED", "FSDP": "ACCELERATE_USE_FSDP"}
ENGINE_LINE = "citing-trl engine: "  # the start of the line :func:`report_engine` prints (tests parse it)


def _asked(environ) -> str | None:
    for engine, variable in ENGINE_REQUESTS.items():
        if environ.get(variable, "false").lower() == "true":
            return engine
    return None


# read at import, before transformers' TrainingArguments sets and then deletes ACCELERATE_USE_DEEPSPEED on GPUs
_ASKED_AT_START = _asked(os.environ)


def requested_engine() -> str | None:
    """``DEEPSPEED`` or ``FSDP`` when the launcher's accelerate config asks for it, else None (DDP, one process)."""
    return _asked(os.environ) or _ASKED_AT_START


def check_engine(accelerator) -> str:
    """Raise :class:`EngineError` (one line) when the config asks for DeepSpeed or FSDP and accelerate runs
    something else: accelerate 1.16 turns FSDP on only for GPU-like devices, so on a CPU-only machine
    ``fsdp.yaml`` would silently train plain data-parallel. Every launcher calls it before training; returns
    the distributed type that runs."""
    got = str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type))
    wanted = requested_engine()
    if wanted and got != wanted:
        why = (" (accelerate enables FSDP only on GPUs and other accelerators, not on CPU)" if wanted == "FSDP" else "")
        raise EngineError(
            f"the accelerate config asks for {wanted} but accelerate set up {got}{why}; launch with "
            "accelerate_configs/cpu_2proc.yaml (data parallel) or zero2.yaml/zero3.yaml with use_cpu=True on CPU")
    return got


def engine_report(accelerator, model=None) -> dict:
    """What really ran: accelerate's distributed type, the ZeRO stage, the FSDP version and whether this rank
    holds only shards of the parameters (ZeRO-3: local size 0; FSDP2: DTensor parameters)."""
    state = accelerator.state
    report = {"distributed_type": str(getattr(state.distributed_type, "value", state.distributed_type)),
              "num_processes": state.num_processes, "mixed_precision": str(state.mixed_precision)}
    if report["distributed_type"] == "DEEPSPEED":
        report["zero_stage"] = state.deepspeed_plugin.zero_stage
    if report["distributed_type"] == "FSDP":
        report["fsdp_version"] = state.fsdp_plugin.fsdp_version
    if model is not None:
        params = list(model.parameters())
        report["parameters_partitioned"] = any(hasattr(p, "ds_numel") and p.numel() < p.ds_numel for p in params) \
            or any(type(p).__name__ == "DTensor" or type(getattr(p, "data", None)).__name__ == "DTensor"
                   for p in params)
    return report


def report_engine(accelerator, model=None) -> dict:
    """Print :func:`engine_report` as one line on the main process (``citing-trl engine: {json}``)."""
    import json

    report = engine_report(accelerator, model)
    if accelerator.is_main_process:
        print(ENGINE_LINE + json.dumps(report, sort_keys=True), flush=True)
    return report


def save_adapter(trainer, output_dir: str | Path) -> Path:
    """Save a Trainer's adapter (and tokenizer) into ``output_dir`` under every engine; every rank calls it.

    DDP, one process and DeepSpeed (ZeRO-3 gathers its 16-bit weights) use ``trainer.save_model``. Under FSDP
    that path writes no adapter with ``SHARDED_STATE_DICT`` and deadlocks with ``FULL_STATE_DICT`` (peft gathers
    the DTensors on one rank only), so there every rank calls peft's ``save_pretrained``, which gathers each
    shard collectively, and only the main process writes."""
    accelerator = trainer.accelerator
    report_engine(accelerator, trainer.model_wrapped if trainer.model_wrapped is not None else trainer.model)
    if str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type)) != "FSDP":
        trainer.save_model(str(output_dir))
        return Path(output_dir)
    model = accelerator.unwrap_model(trainer.model)
    model.save_pretrained(str(output_dir), is_main_process=accelerator.is_main_process)
    if accelerator.is_main_process and trainer.processing_class is not None:
        trainer.processing_class.save_pretrained(str(output_dir))
    accelerator.wait_for_everyone()
    return Path(output_dir)


@contextlib.contextmanager
def gathered_for_generation(model):
    """Inside, ``model``'s parameters are whole on every rank so that it can generate: a no-op unless it was
    loaded partitioned by DeepSpeed ZeRO-3 (``zero3_init_flag``), whose parameters are then gathered for the
    duration (every rank must enter together) and released after."""
    partitioned = [p for p in model.parameters() if hasattr(p, "ds_id")]
    if not partitioned:
        yield model
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield model


@contextlib.contextmanager
def whole_model_loading():
    """Models loaded inside are whole on this rank even under DeepSpeed ZeRO-3. With ``zero3_init_flag`` a trainer
    leaves transformers set to partition every later ``from_pretrained`` over the ranks, a collective: a model
    that only the main process loads (the local teacher, the matching encoder, a reward model) would wait for the
    other ranks forever. A no-op without ZeRO-3."""
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:  # pragma: no cover - transformers is a dependency
        yield
        return
    ref = hf_deepspeed._hf_deepspeed_config_weak_ref  # transformers keeps the active config only behind this weakref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = ref

