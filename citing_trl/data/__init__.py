"""Instruction data for CITING (paper §4.1).

The paper trains on Alpaca (split 8:1:1 into train/validation/test) and evaluates zero-shot on three families
of public data sets, each a mixture: ``world_knowledge`` (NaturalQuestions-open + TriviaQA),
``reading_comprehension`` (SQuAD v2 + QuAC + BoolQ) and ``commonsense`` (PIQA + OpenBookQA + CommonsenseQA).
Every loader returns :class:`datasets.Dataset` rows in one schema, :data:`COLUMNS`. Recipes call
:func:`load_instructions` with a data spec (``"demo"``, ``"alpaca:data/alpaca.json"``,
``"boolq:boolq_dev.jsonl@100+nq_open:nq_open_dev.jsonl@100"``, ...).

One room per job:

* :mod:`~citing_trl.data.readers`: raw rows from ``.json``/``.jsonl`` files, each with its location for errors;
* :mod:`~citing_trl.data.schema`: the row schema (:data:`COLUMNS`, :data:`NO_ANSWER`, :data:`KINDS`) and the
  clean-up into it (empty rows and duplicates dropped and counted, ids made unique);
* :mod:`~citing_trl.data.sources`: one converter per source and the :data:`SOURCES` / :data:`FAMILIES` registry;
* :mod:`~citing_trl.data.splits`: the split rules (Alpaca's seeded 8:1:1 shuffle, the seeded id hash that splits
  a single file 8:1:1, the demo's fixed split) and seeded row caps;
* :mod:`~citing_trl.data.loaders`: a source, a family, a plain file or the demo set as a Dataset, from a local
  file or the Hub;
* :mod:`~citing_trl.data.spec`: the ``name:path@n+...`` spec grammar and :func:`load_instructions`.

Bad input raises :class:`DataError` naming the file, the row and the field.
"""

import datasets  # noqa: F401 - kept as an attribute: tests and users patch citing_trl.data.datasets.load_dataset

from citing_trl.data.loaders import DEMO_FILE, load_alpaca, load_demo, load_family, load_file, load_source
from citing_trl.data.schema import COLUMNS, FEATURES, KINDS, NO_ANSWER
from citing_trl.data.sources import FAMILIES, SOURCES, Source
from citing_trl.data.spec import load_instructions, local_files_in_spec
from citing_trl.data.splits import DEMO_HELD_OUT, FILE_SPLIT, SPLITS, file_split_of
from citing_trl.errors import DataError

__all__ = [
    "COLUMNS", "DEMO_FILE", "DEMO_HELD_OUT", "FAMILIES", "FEATURES", "FILE_SPLIT", "KINDS", "NO_ANSWER", "SOURCES",
    "SPLITS", "DataError", "Source", "file_split_of", "load_alpaca", "load_demo", "load_family", "load_file",
    "load_instructions", "load_source", "local_files_in_spec",
]
