"""Which rows go to train, validation and test, and seeded caps on the number of rows.

Split names are :data:`SPLITS` (``train``/``validation``/``test``). Three rules divide data that does not come
already split:

* **Alpaca** (paper §4.2) is split 8:1:1 by a seeded shuffle after de-duplication (:func:`shuffle_split`), so
  the three parts are disjoint and the same seed always gives the same split.
* **A single file given for a source** (``"boolq:boolq_dev.jsonl"``) is usually one split of the original data
  set (a dev set, a slice), yet CITING trains on one part of it and evaluates on another. Each row goes to
  train / validation / test by a seeded hash of its id, ``sha256(f"{seed}:{id}")`` read as a number in [0, 1),
  cut at 0.8 and 0.9 (:data:`FILE_SPLIT`, :func:`file_split_of`); a spec part ending in ``%P`` holds out P %
  as test instead (:func:`file_cuts`), for small files whose 10 % is too few rows to measure on. The rule looks at the id only, so a row lands
  in the same split whatever the file's order, the ``limit`` or the per-source caps, and the three splits never
  share a row. (Rows of one SQuAD/QuAC passage share a context but not a question, so a passage may appear on
  both sides of the split; the questions do not.)
* **The shipped demo set** has a fixed split by position (:func:`demo_split`, :data:`DEMO_HELD_OUT`).

Hub ids use the data set's own splits; a plain file of instructions without a source prefix is used whole, as
the split asked for. :func:`sample_rows` keeps a seeded random sample of at most N rows (``limit``, ``@N``).
"""

from __future__ import annotations

import hashlib
import random

from citing_trl.data.schema import KINDS
from citing_trl.errors import DataError

SPLITS = ("train", "validation", "test")
FILE_SPLIT = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}  # fractions of the id hash
TEST_PERCENT = 10  # the default share of a single file held out as test (FILE_SPLIT)
TEST_PERCENT_RANGE = (10, 80)
DEMO_HELD_OUT = {"validation": 2, "test": 2}  # rows per kind, taken from the end of each kind's list


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def sample_rows(rows: list, limit: int | None, seed: int) -> list:
    """A seeded random sample of at most ``limit`` rows (all of them, in order, when there are no more)."""
    if limit is None or limit >= len(rows):
        return rows
    if limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    return random.Random(seed).sample(rows, limit)


def shuffle_split(rows: list[dict], seed: int) -> dict[str, list[dict]]:
    """8:1:1 by a seeded shuffle: validation and test get round(n / 10) rows each, train the rest."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_val = n_test = round(len(rows) / 10)
    n_train = len(rows) - n_val - n_test
    cuts = {"train": order[:n_train], "validation": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    return {split: [rows[i] for i in idx] for split, idx in cuts.items()}


def file_cuts(test_percent: int = TEST_PERCENT) -> dict[str, tuple[float, float]]:
    """The id-hash cuts of a single file when ``test_percent`` % of it is held out as test (spec ``%P``):
    validation keeps its 10 %, train gets the rest. The default is :data:`FILE_SPLIT`; a larger share only moves
    the train/validation cut down, so every row that is test at 10 % stays test (held-out rows never move into
    training when the share grows)."""
    lo, hi = TEST_PERCENT_RANGE
    if not isinstance(test_percent, int) or not lo <= test_percent <= hi:
        raise DataError(f"held-out test share %{test_percent}: must be a whole percent from {lo} to {hi}")
    if test_percent == TEST_PERCENT:
        return FILE_SPLIT
    test = 1.0 - test_percent / 100
    return {"train": (0.0, test - 0.1), "validation": (test - 0.1, test), "test": (test, 1.0)}


def file_split_of(row_id: str, seed: int, test_percent: int = TEST_PERCENT) -> str:
    """The split a row of a single-file source belongs to (see the module docstring): a seeded hash of its id."""
    point = int(hashlib.sha256(f"{seed}:{row_id}".encode()).hexdigest()[:15], 16) / 16**15
    return next(name for name, (lo, hi) in file_cuts(test_percent).items() if lo <= point < hi)


def split_file_rows(rows: list[dict], split: str, seed: int, test_percent: int = TEST_PERCENT) -> list[dict]:
    """The rows of one file that :func:`file_split_of` puts in ``split``."""
    return [r for r in rows if file_split_of(r["id"], seed, test_percent) == split]


def demo_split(rows: list[dict], split: str) -> list[dict]:
    """Fixed split of the demo set, the same on every machine: of each kind's rows in file order, the last
    ``DEMO_HELD_OUT["test"]`` are test, the ``DEMO_HELD_OUT["validation"]`` before them validation, the rest
    train (16 per kind -> 12/2/2, i.e. 60/10/10 rows), so training never sees a held-out row."""
    n_test, n_val = DEMO_HELD_OUT["test"], DEMO_HELD_OUT["validation"]
    out = []
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind]
        cut = len(mine) - n_test - n_val
        out += {"train": mine[:cut], "validation": mine[cut:cut + n_val], "test": mine[cut + n_val:]}[split]
    return out
