"""The data spec grammar: one string that names what a recipe trains or evaluates on.

::

    spec  := part ("+" part)*
    part  := name ["%" P] ["@" N]
    name  := "demo" | FAMILY | SOURCE | SOURCE ":" (FILE | HUB_ID) | FILE

``FILE`` is a local ``.json``/``.jsonl`` path. ``@N`` keeps a seeded sample of at most N rows of that part's
split (``"boolq:boolq_dev.jsonl@100"``). Parts joined with ``+`` form a mixture, shuffled with the seed;
``%P`` (a ``SOURCE:FILE`` part only) holds out P % of that file as the test split instead of 10 %
(``"squad_v2:dev.json%50@100"``; see :func:`citing_trl.data.splits.file_cuts`). ``limit`` then caps the whole, e.g. ``"boolq:PATH+commonsense_qa:PATH+nq_open:PATH+squad_v2:PATH"`` for QA.

:func:`load_instructions` is the entry point for recipes; :func:`local_files_in_spec` lists the files a spec
names so a launcher can check them before anything runs.
"""

from __future__ import annotations

import random
from pathlib import Path

import datasets

from citing_trl.data.loaders import load_demo, load_family, load_file, source_rows
from citing_trl.data.readers import is_local
from citing_trl.data.schema import COLUMNS, FEATURES, to_dataset
from citing_trl.data.sources import FAMILIES, SOURCES
from citing_trl.data.splits import TEST_PERCENT, check_split, sample_rows, split_file_rows
from citing_trl.errors import DataError


def _spec_rows(spec: str, split: str, seed: int, test_percent: int | None = None) -> tuple[list[dict], datasets.Features]:
    """Rows of one (non-mixture) spec; see :func:`load_instructions`."""
    name, _, rest = spec.partition(":")
    single_file = bool(rest) and name in SOURCES and name != "alpaca" and (is_local(rest) or Path(rest).is_file())
    if test_percent is not None and not single_file:
        raise DataError(f"data spec {spec!r}%{test_percent}: a held-out share '%P' applies to a '<source>:<file>' "
                        "part only (Hub ids and families keep their own splits)")
    if spec == "demo":
        demo = load_demo(split)
        return demo.to_list(), demo.features
    if spec in FAMILIES:
        return load_family(spec, seed=seed, split=split).to_list(), FEATURES
    if spec in SOURCES or (rest and name in SOURCES):
        if single_file and name == "ifeval":  # split by instruction, stratified by constraint type
            return source_rows(name, rest, split, None, seed, test_percent or TEST_PERCENT), FEATURES
        if single_file:
            rows = source_rows(name, rest, "train", None, seed)
            return split_file_rows(rows, split, seed, test_percent or TEST_PERCENT), FEATURES
        return source_rows(name, rest or None, split, None, seed), FEATURES
    if is_local(spec):
        return load_file(spec).to_list(), FEATURES
    raise DataError(f"unknown data spec {spec!r}; expected 'demo', a family ({', '.join(FAMILIES)}), a source "
                    f"({', '.join(SOURCES)}), '<source>:<file>', a .json/.jsonl file, or several joined with '+'")


def _split_cap(part: str) -> tuple[str, int | None]:
    head, at, tail = part.rpartition("@")
    if not at or not tail.strip().isdigit():
        if at and not is_local(part) and not Path(part).exists():
            raise DataError(f"data spec {part!r}: the per-source cap after '@' must be a whole number, got {tail!r}")
        return part, None
    return head, int(tail)


def _split_test_percent(part: str) -> tuple[str, int | None]:
    """``name%P`` -> (name, P); a part without a trailing ``%<digits>`` is returned whole."""
    head, pct, tail = part.rpartition("%")
    if not pct or not tail.strip().isdigit() or is_local(part) or Path(part).exists():
        return part, None
    return head, int(tail)


def with_part_cap(spec: str, n: int) -> str:
    """``spec`` with every part capped at ``n`` rows (``@n`` replaces any cap a part had); the parts, their
    ``%P`` held-out shares and hence their splits are unchanged, so a test spec made from a training spec this
    way never overlaps its training rows."""
    if n < 1:
        raise DataError(f"a per-part cap must be >= 1, got {n}")
    return "+".join(f"{_split_cap(p.strip())[0]}@{n}" for p in spec.split("+"))


def local_files_in_spec(spec: str) -> list[str]:
    """The local .json/.jsonl files a spec names (for checking them before anything runs)."""
    out = []
    for part in spec.split("+"):
        part = part.strip()
        head, at, tail = part.rpartition("@")
        part = head if at and tail.isdigit() else part
        part = _split_test_percent(part)[0]
        name, _, rest = part.partition(":")
        target = rest if rest and name in SOURCES else part
        if is_local(target):
            out.append(target)
    return out


def load_instructions(spec: str, split: str = "train", limit: int | None = None, seed: int = 42) -> datasets.Dataset:
    """One entry point for recipes. ``spec`` is one of:

    * ``"demo"``: the shipped demo set (:func:`load_demo`, its fixed 60/10/10 ``split``; ``kind`` column kept);
    * a family name (``alpaca``, ``world_knowledge``, ``reading_comprehension``, ``commonsense``): from the Hub;
    * a source name (``nq_open``, ``squad_v2``, ...): that source from the Hub;
    * ``"<source>:<file or Hub id>"``, e.g. ``"alpaca:data/alpaca.json"`` (its 8:1:1 ``split``) or
      ``"squad_v2:dev-v2.0.json"`` (a file is split 8:1:1 by a seeded hash of the row id, see
      :mod:`citing_trl.data.splits`; a Hub id uses its own splits);
    * a path to a ``.json``/``.jsonl`` file of {instruction, input?, output?} (used whole, as one split);
    * several of these joined with ``+``, each optionally capped with ``@N`` rows, e.g.
      ``"boolq:boolq_dev.jsonl@100+nq_open:nq_open_dev.jsonl@100"``: the parts' ``split`` rows, mixed and
      shuffled with ``seed``.

    ``limit`` keeps a seeded random sample of at most that many rows (of the whole mixture).
    """
    check_split(split)
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    parts = [p.strip() for p in spec.split("+")] if "+" in spec else [spec]
    if len(parts) > 1 and not all(parts):
        raise DataError(f"data spec {spec!r}: empty part in a '+' mixture")
    rows, features, origins = [], FEATURES, set()
    for part in parts:
        part, cap = _split_cap(part) if len(parts) > 1 or "@" in part else (part, None)
        part, test_percent = _split_test_percent(part)
        if part in origins:
            raise DataError(f"data spec {spec!r}: {part!r} appears twice")
        origins.add(part)
        part_rows, features = _spec_rows(part, split, seed, test_percent)
        rows += sample_rows(part_rows, cap, seed)
    if len(parts) > 1:
        if features is not FEATURES:  # the demo's extra column cannot be mixed
            features = FEATURES
            rows = [{c: r[c] for c in COLUMNS} for r in rows]
        ids = [r["id"] for r in rows]
        if len(set(ids)) != len(ids):
            raise DataError(f"data spec {spec!r}: the parts share row ids; mix different sources")
        random.Random(seed).shuffle(rows)
    if spec == "demo":
        demo = to_dataset(rows, features)
        return demo if limit is None else demo.select(sorted(sample_rows(list(range(len(demo))), limit, seed)))
    return to_dataset(sample_rows(rows, limit, seed), features)
