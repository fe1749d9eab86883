"""The one owner of a run folder's layout: where round k lives, and how processes share a file.

Rounds. Algorithm 1's round k writes into ``<output_dir>/round_<k>/`` (its files: :mod:`citing_trl.round_result`).
Every reader of a run folder (the pipeline, the baselines that start from a CITING run, the Hub upload) finds the
rounds through :func:`round_dirs` and names one with :func:`round_dir`; nothing else parses ``round_<k>``.

Rank shards. Under a launcher each process appends its rows to its own shard of a file, ``<stem>.rank<r><suffix>``
beside ``<stem><suffix>`` (:func:`shard_path`; with one process a stage may write the file itself:
:func:`own_file`). A resumed run reads the file and every shard on disk (:func:`read_shards`), whatever the
process count was, so finished rows are never generated again. A stage whose file is its output joins the shards
into the file in input order and removes them once every rank is done (:func:`join_shards`); the pipeline's
rollouts keep their shards (each rank's share stays inspectable).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from citing_trl.jsonl import read_jsonl, write_jsonl

ROUND_PREFIX = "round_"
_ROUND = re.compile(rf"{ROUND_PREFIX}(\d+)")


def round_dir(run_dir: str | Path, k: int) -> Path:
    """Round ``k``'s folder in a run folder: ``<run_dir>/round_<k>``."""
    return Path(run_dir) / f"{ROUND_PREFIX}{k}"


def round_index(path: str | Path) -> int | None:
    """``k`` of a ``round_<k>`` folder, None for any other name."""
    match = _ROUND.fullmatch(Path(path).name)
    return int(match.group(1)) if match else None


def round_dirs(run_dir: str | Path) -> list[Path]:
    """Every ``round_<k>/`` folder of a run folder, by ``k`` (an empty list when there is none)."""
    found = [d for d in Path(run_dir).glob(f"{ROUND_PREFIX}*") if d.is_dir() and round_index(d) is not None]
    return sorted(found, key=round_index)


def shard_path(path: str | Path, rank: int) -> Path:
    """Process ``rank``'s shard of ``path``: ``x.jsonl`` -> ``x.rank<rank>.jsonl``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def own_file(path: str | Path, rank: int, world_size: int) -> Path:
    """Where this process appends: ``path`` itself for one process, else its shard."""
    return Path(path) if world_size <= 1 else shard_path(path, rank)


def shard_paths(path: str | Path) -> list[Path]:
    """The shards of ``path`` on disk (any process count), by name."""
    path = Path(path)
    return sorted(path.parent.glob(f"{path.stem}.rank*{path.suffix}"))


def read_shards(path: str | Path) -> dict[str, dict]:
    """Every record of ``path`` and of its shards, by ``id`` (a later file's record wins)."""
    out: dict[str, dict] = {}
    for f in [Path(path), *shard_paths(path)]:
        out.update({r["id"]: r for r in read_jsonl(f)})
    return out


def join_shards(path: str | Path, ids: Sequence[str]) -> None:
    """Write ``path`` with the record of every id in ``ids``, in that order (atomically), then remove its shards.
    Called once every rank is done; a missing id is a bug in the caller."""
    path = Path(path)
    shards = shard_paths(path)
    done = read_shards(path)
    missing = [i for i in ids if i not in done]
    if missing:
        raise RuntimeError(f"{path}: no record on disk for ids {missing[:5]} after every rank finished")
    write_jsonl(path, [done[i] for i in ids])
    for shard in shards:
        shard.unlink()
