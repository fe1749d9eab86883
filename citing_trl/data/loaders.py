"""Loading a source, a family, a plain instruction file or the shipped demo set as a :class:`datasets.Dataset`.

Each source (:data:`~citing_trl.data.sources.SOURCES`) is read either from the Hugging Face Hub (its default id,
or another id you pass) or from a local ``.json``/``.jsonl`` file holding the same rows; both go through the
same converter and then :func:`~citing_trl.data.schema.finish_rows`. For Hub sources whose test labels are not
public, ``test`` reads the labelled validation split (see ``Source.splits``). A local file is a single split, so
``split`` only matters here for Hub ids and for Alpaca, which is split 8:1:1 (see :mod:`citing_trl.data.splits`).

Bad input raises :class:`~citing_trl.errors.DataError` naming the file, the row and the field.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from pathlib import Path

import datasets

from citing_trl.data.ifeval import file_rows as ifeval_file_rows
from citing_trl.data.ifeval import split_rows as ifeval_split_rows
from citing_trl.data.readers import Row, is_local, read_file
from citing_trl.data.schema import FEATURES, KINDS, finish_rows, to_dataset
from citing_trl.data.sources import FAMILIES, SOURCES, generic, open_ended
from citing_trl.data.splits import TEST_PERCENT, check_split, demo_split, sample_rows, shuffle_split
from citing_trl.errors import DataError
from citing_trl.jsonl import iter_jsonl

DEMO_FILE = "demo_data/demo.jsonl"  # inside the citing_trl package (package data)


def raw_rows(name: str, path: str | Path | None, split: str) -> tuple[str, Iterator[tuple[str, object]]]:
    """(origin, rows) for a source from a local file or from the Hub."""
    if path is not None and (is_local(path) or Path(path).is_file()):
        return str(path), read_file(Path(path))
    spec = SOURCES[name]
    hub_id = str(path or spec.hub_id)
    config = spec.config if hub_id == spec.hub_id else None
    hub_split = spec.splits.get(split, split) if hub_id == spec.hub_id else split
    try:
        ds = datasets.load_dataset(hub_id, config, split=hub_split)
    except Exception as err:  # offline, unknown id, missing split...
        raise DataError(f"source {name!r}: cannot load {hub_id!r} (split {hub_split!r}) from the Hugging Face Hub "
                        f"({type(err).__name__}: {str(err)[:300]}); pass a local .json/.jsonl file for it") from err
    origin = f"{hub_id} [{hub_split}]"
    return origin, ((f"row {i}", row) for i, row in enumerate(ds, 1))


def convert_rows(name: str, origin: str, raw: Iterable[tuple[str, object]], convert: Callable) -> list[dict]:
    """Run a converter over raw rows and finish them (schema, empty rows and duplicates dropped)."""
    rows = []
    for where, data in raw:
        produced = convert(Row(data, origin, where))
        rows.extend(produced if isinstance(produced, list) else [produced])
    return finish_rows(rows, origin, name)


def alpaca_rows(path_or_id: str | Path, seed: int) -> dict[str, list[dict]]:
    origin, raw = raw_rows("alpaca", path_or_id, "train")
    return shuffle_split(convert_rows("alpaca", origin, raw, open_ended), seed)


def load_alpaca(path_or_id: str | Path = "tatsu-lab/alpaca", seed: int = 42) -> datasets.DatasetDict:
    """Alpaca (a Hub id or a local JSON/JSONL of {instruction, input, output}) split 8:1:1 by ``seed``
    into train/validation/test (paper §4.2). The split is a seeded shuffle after de-duplication, so the
    three parts are disjoint and the same seed always gives the same split."""
    return datasets.DatasetDict({k: to_dataset(v) for k, v in alpaca_rows(path_or_id, seed).items()})


def ifeval_rows(path: str | Path, split: str, seed: int, test_percent: int = TEST_PERCENT) -> list[dict]:
    """``split`` of a local file for the ``ifeval`` source: IFEval rows, or Alpaca rows given constraints
    (:mod:`citing_trl.data.ifeval`), dealt to splits by instruction and stratified by constraint type."""
    origin, raw = raw_rows("ifeval", path, "train")
    rows = ifeval_split_rows(ifeval_file_rows([data for _, data in raw], seed), split, seed, test_percent)
    return convert_rows("ifeval", origin, ((f"key {r.get('key')}", r) for r in rows), SOURCES["ifeval"].convert)


def source_rows(name: str, path: str | Path | None, split: str, limit: int | None, seed: int,
                test_percent: int = TEST_PERCENT) -> list[dict]:
    """The rows of :func:`load_source`, as a list."""
    if name not in SOURCES:
        raise DataError(f"unknown source {name!r}; known sources: {', '.join(SOURCES)}")
    check_split(split)
    if name == "ifeval" and path is not None and (is_local(path) or Path(path).is_file()):
        rows = ifeval_rows(path, split, seed, test_percent)
    elif name == "alpaca":
        rows = alpaca_rows(path or SOURCES["alpaca"].hub_id, seed)[split]
    else:
        origin, raw = raw_rows(name, path, split)
        rows = convert_rows(name, origin, raw, SOURCES[name].convert)
    return sample_rows(rows, limit, seed)


def load_source(name: str, path: str | Path | None = None, split: str = "test", limit: int | None = None,
                seed: int = 42) -> datasets.Dataset:
    """One source (a key of :data:`SOURCES`) in instruction form.

    ``path``: a local .json/.jsonl file with the source's own rows, another Hub id, or None for the default
    Hub id. ``split``: train/validation/test (Hub only; Alpaca is split 8:1:1 here). ``limit``: keep a
    seeded random sample of at most this many rows.
    """
    return to_dataset(source_rows(name, path, split, limit, seed))


def load_family(name: str, paths: dict[str, str | Path] | None = None, caps: dict[str, int] | int | None = None,
                seed: int = 42, split: str = "test") -> datasets.Dataset:
    """A family of §4.1 (a key of :data:`FAMILIES`): its sources mixed and shuffled with ``seed``.

    ``paths`` maps a source to a local file (sources without one are read from the Hub); ``caps`` is a
    per-source row cap (an int for every source, or a dict by source). If a source can be read neither
    from a file nor from the Hub, a DataError names every such source: none is silently left out.
    """
    if name not in FAMILIES:
        raise DataError(f"unknown family {name!r}; known families: {', '.join(FAMILIES)}")
    members, paths = FAMILIES[name], dict(paths or {})
    for what, given in (("paths", paths), ("caps", caps if isinstance(caps, dict) else {})):
        if unknown := sorted(set(given) - set(members)):
            raise DataError(f"family {name!r}: {what} names {unknown}, which are not among its sources {list(members)}")
    rows, failures = [], []
    for source in members:
        cap = caps.get(source) if isinstance(caps, dict) else caps
        try:
            rows += source_rows(source, paths.get(source), split, cap, seed)
        except DataError as err:
            if source in paths:
                raise
            failures.append(f"{source}: {err}")
    if failures:
        raise DataError(f"family {name!r}: {len(failures)} source(s) have no local file and could not be loaded "
                        "from the Hub; give them with paths={source: file}:\n  " + "\n  ".join(failures))
    random.Random(seed).shuffle(rows)
    return to_dataset(rows)


def load_file(path: str | Path) -> datasets.Dataset:
    """A generic .json/.jsonl file of {instruction, input?, output?} rows (optional id, source, answers).
    ``source`` defaults to the file's stem; rows without an output get ``answers == []``."""
    path = Path(path)
    return to_dataset(convert_rows(path.stem, str(path), read_file(path), generic))


def load_demo(split: str | None = None) -> datasets.Dataset:
    """The shipped demo set: 80 instructions, 16 for each kind of task in the paper's Table 4, with
    reference answers. Besides :data:`COLUMNS` it keeps one extra column, ``kind`` (one of :data:`KINDS`).
    ``split`` (train/validation/test) selects the fixed held-out split of
    :func:`~citing_trl.data.splits.demo_split`; None = all."""
    origin = f"citing_trl/{DEMO_FILE}"
    text = resources.files("citing_trl").joinpath(DEMO_FILE).read_text(encoding="utf-8")
    rows = []
    for where, data in iter_jsonl(text, origin):
        r = Row(data, origin, where)
        if r.text("kind") not in KINDS:
            raise r.fail("kind", f"is {r.data['kind']!r}, expected one of {', '.join(KINDS)}")
        rows.append(generic(r) | {"output": r.text("output")})
    features = datasets.Features({**FEATURES, "kind": datasets.Value("string")})
    rows = finish_rows(rows, origin, "demo", extra=("kind",))
    if split is not None:
        check_split(split)
        rows = demo_split(rows, split)
    return to_dataset(rows, features)
