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
