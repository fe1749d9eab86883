"""Command-line glue shared by the recipes: user errors end the run with one line, bugs keep their traceback.

A *user error* is something the person running the recipe can fix: a flag value out of range, a missing file,
a malformed data row, a model that cannot be found, a teacher that does not answer. Those print
``error: <one line naming the flag, file, row or request>`` on stderr and exit with status 2. Every other
exception is a bug in the code and propagates with its traceback.

Under a launcher (``accelerate launch``, ``torchrun``) every rank exits 2 on a user error but only rank 0 prints
the line, so the user reads it once; the ranks agree on the failure (each computes the same check, or the main
process decides and shares it: :func:`citing_trl.distributed.on_main`). The launcher itself then reports the
failed processes and exits 1. The ranks leave together (:func:`exit_together`): the launcher stops every other
rank as soon as one exits, and a rank stopped that way still reports 2.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable

from citing_trl.errors import UserError


def user_errors() -> tuple[type[BaseException], ...]:
    """What :func:`run_main` prints as one line: the :class:`UserError` family, and a missing file a flag named."""
    return UserError, FileNotFoundError


def process_rank() -> int:
    """This process's global rank under a launcher (``RANK``, set by accelerate launch and torchrun), else 0."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


EXIT_KEY = "citing_trl/user_error_exit"


def exit_together(code: int, timeout: float = 30.0) -> None:
    """Exit with ``code``; under torch.distributed first wait (up to ``timeout`` s, through the process group's
    store, never a collective) until every rank is exiting too. torch's launcher stops the remaining ranks with
    SIGTERM as soon as one exits, so a rank stopped after it got here exits with ``code`` as well."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        sys.exit(code)

    def leave(*_):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # no gloo/NCCL teardown, which can abort a process at interpreter exit

    signal.signal(signal.SIGTERM, leave)
    try:
        store, world = dist.distributed_c10d._get_default_store(), dist.get_world_size()
        store.add(EXIT_KEY, 1)
        deadline = time.monotonic() + timeout
        while store.add(EXIT_KEY, 0) < world and time.monotonic() < deadline:  # a rank failing alone: time out
            time.sleep(0.02)
    except Exception:  # the store is gone (another rank's launcher stopped): nothing to wait for
        pass
    leave()


def run_main(main: Callable[[], object], prog: str | None = None) -> None:
    """Run a recipe's ``main``; a user error prints one line (on rank 0 only) and exits 2 on every rank (see
    the module docstring). ``prog`` starts the line (``evaluate.py: error: ...``, as argparse writes its own
    errors)."""
    try:
        main()
    except user_errors() as err:
        if process_rank() == 0:
            message = " ".join(str(err).split())  # one line, whatever the exception's own formatting
            print(f"{prog + ': ' if prog else ''}error: {message}", file=sys.stderr)
        exit_together(2)
