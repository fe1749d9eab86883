"""The one row schema every loader returns, and the clean-up that brings rows into it.

:data:`COLUMNS`, as :class:`datasets.Dataset` columns (:data:`FEATURES`):

``id``           stable string id (the data set's own id when it has one, else a hash of the text), always
                 prefixed with the source name (``boolq-...``)
``instruction``  the task put to the model
``input``        optional context: passage, conversation, answer choices ("A. ...\\nB. ..."); may be ""
``output``       the reference answer y
``answers``      every gold answer, for scoring QA sets later; ``[output]`` for open-ended data (``[]`` for
                 a generic file without outputs). Unanswerable reading-comprehension questions have
                 ``output == answers[0] == NO_ANSWER``; multiple-choice rows have ``["B. text", "text"]``.
``source``       the data set the row came from ("alpaca", "nq_open", ...)

:func:`finish_rows` strips the text fields, drops rows whose instruction is empty and exact duplicates (same
instruction and input), makes the ids unique, and logs how many rows it dropped.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

import datasets

logger = logging.getLogger(__name__)

COLUMNS = ["id", "instruction", "input", "output", "answers", "source"]
FEATURES = datasets.Features(
    {c: datasets.Sequence(datasets.Value("string")) if c == "answers" else datasets.Value("string") for c in COLUMNS}
)
NO_ANSWER = "The passage does not contain the answer."
KINDS = ("factual", "explanation", "analysis", "creative", "practical")  # paper Table 4, for the demo data


def unique(items: Iterable[str]) -> list[str]:
    """The non-blank strings of ``items``, stripped, first occurrence kept, in order."""
    return list(dict.fromkeys(s.strip() for s in items if s.strip()))


def text_id(source: str, instruction: str, input: str) -> str:
    """The id of a row whose data set gives none: the source and a hash of its instruction and input."""
    digest = hashlib.sha1("\x1f".join((instruction, input)).encode()).hexdigest()
    return f"{source}-{digest[:12]}"


def finish_rows(rows: Iterable[dict], origin: str, source: str, extra: tuple[str, ...] = ()) -> list[dict]:
    """Normalise rows to COLUMNS (+ extra), drop empty instructions and exact duplicates, log the counts."""
    out, seen, ids, empty, dupes = [], set(), set(), 0, 0
    for row in rows:
        instruction, input = row["instruction"].strip(), row.get("input", "").strip()
        if not instruction:
            empty += 1
            continue
        if (instruction, input) in seen:
            dupes += 1
            continue
        seen.add((instruction, input))
        output = row["output"].strip()
        rid = row.get("id") or text_id(source, instruction, input)
        rid = rid if rid.startswith(f"{source}-") else f"{source}-{rid}"
        while rid in ids:  # keep ids unique even if a data set repeats one
            rid += "+"
        ids.add(rid)
        answers = unique(row["answers"]) if "answers" in row else ([output] if output else [])
        out.append({"id": rid, "instruction": instruction, "input": input, "output": output,
                    "answers": answers, "source": row.get("source", source),
                    **{k: row[k] for k in extra}})
    if empty or dupes:
        logger.warning("%s: dropped %d row(s) with an empty instruction and %d duplicate row(s) (same instruction "
                       "and input); kept %d", origin, empty, dupes, len(out))
    else:
        logger.info("%s: loaded %d rows", origin, len(out))
    return out


def to_dataset(rows: list[dict], features: datasets.Features = FEATURES) -> datasets.Dataset:
    if not rows:  # from_list([]) loses the columns and then fails to cast; an empty split is a valid answer
        return datasets.Dataset.from_dict({name: [] for name in features}, features=features)
    return datasets.Dataset.from_list(rows, features=features)
