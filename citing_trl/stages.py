"""Resume by done marker: the one way a long run is cut into stages that a rerun skips once finished.

A stage is a piece of work with a *marker* file. :func:`run_stage` skips the work when the marker exists;
otherwise it runs the work and only then writes the marker, atomically (temporary file, fsync, rename). So a
crash or a kill anywhere inside the work leaves no marker and the stage runs again on the next attempt, and a
marker is never half written. The marker holds a small JSON object the work returns (its wall time, its
statistics), which a rerun gets back instead of running the work.

Used by RAFT's stages, RRHF's candidate set and ``baselines/compare.py``'s stages.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageResult:
    """What :func:`run_stage` did: ``ran`` is False when the marker existed and the work was skipped;
    ``record`` is what the marker holds (the work's return value when it ran)."""

    ran: bool
    record: dict = field(default_factory=dict)


def is_done(marker: str | Path) -> bool:
    """True once the stage of ``marker`` has finished."""
    return Path(marker).is_file()


def read_marker(marker: str | Path) -> dict:
    """The JSON object a marker holds (``{}`` for a marker written by older code as plain text)."""
    try:
        record = json.loads(Path(marker).read_text())
    except json.JSONDecodeError:
        return {}
    return record if isinstance(record, dict) else {}


def write_marker(marker: str | Path, record: dict | None = None) -> None:
    """Write ``record`` as the marker, atomically: a reader sees no marker or the whole of it."""
    marker = Path(marker)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(marker.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps(record or {}))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, marker)


def run_stage(marker: str | Path, work: Callable[[], dict | None], *, name: str | None = None) -> StageResult:
    """Run ``work()`` unless ``marker`` exists, then write its returned dict as the marker (see the module
    docstring). An exception from ``work`` propagates and leaves no marker."""
    if is_done(marker):
        logger.info("%s: done before (%s); skipped", name or marker, marker)
        return StageResult(ran=False, record=read_marker(marker))
    record = work() or {}
    write_marker(marker, record)
    return StageResult(ran=True, record=record)
