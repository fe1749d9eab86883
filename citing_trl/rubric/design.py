"""Rubric design with a teacher LLM (paper §3.2, Algorithm 1 line 5).

Asking the teacher for criteria instruction by instruction does not scale, so the paper has the teacher
*classify* a sample of instructions into M kinds of task and write good/bad criteria once per kind.
:func:`design_rubric` does that:

1. sample K instructions (``sample_size``) with a fixed seed;
2. send them in batches of ``batch_size`` numbered instructions, all batches in one
   :meth:`Teacher.complete` call (so an OpenAI-compatible backend runs them concurrently), using
   :func:`citing_trl.prompts.rubric_design_messages`;
3. parse each answer robustly (code fences and chatter around the JSON are tolerated), validate it, and
   ask the teacher to repair an unusable answer (:func:`citing_trl.prompts.rubric_repair_messages`) up to
   ``max_repairs`` times before giving up with :class:`~citing_trl.rubric.schema.RubricDesignError`;
4. merge the per-batch categories into at most M (:func:`citing_trl.rubric.merge.merge_categories`).

The number of teacher requests is ``ceil(K / batch_size)`` plus the repairs; it never depends on the size
of the data set. The result is a :class:`~citing_trl.rubric.schema.Rubric`.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import random
import re
from collections.abc import Sequence
from typing import Any

from citing_trl.errors import DataError
from citing_trl.prompts import rubric_design_messages, rubric_repair_messages
from citing_trl.rubric.merge import merge_categories
from citing_trl.rubric.schema import Category, Rubric, RubricDesignError

logger = logging.getLogger(__name__)

QUOTE_LIMIT = 600  # characters of a bad teacher answer quoted in an error message


# --------------------------------------------------------------------------------------------------
# Parsing and validating the teacher's answer
# --------------------------------------------------------------------------------------------------

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.S)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


def extract_json_object(text: str) -> Any:
    """The outermost JSON value in a model answer: code fences and prose around it are ignored, a trailing
    comma before ``}``/``]`` is forgiven. An object with a ``categories`` key is preferred, then a list,
    then any object. Raises ValueError (with the reason) when there is none."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the answer is empty")
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    first_error = None
    found: list[Any] = []
    for chunk in candidates:
        for variant in dict.fromkeys((chunk, _TRAILING_COMMA.sub(r"\1", chunk))):
            pos = 0
            while pos < len(variant):
                starts = [j for j in (variant.find("{", pos), variant.find("[", pos)) if j >= 0]
                if not starts:
                    break
                start = min(starts)
                try:
                    value, end = decoder.raw_decode(variant, start)
                except json.JSONDecodeError as err:
                    if first_error is None:
                        first_error = f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
                    pos = start + 1
                    continue
                found.append(value)
                pos = end  # do not descend into a value that decoded whole
    for value in found:
        if isinstance(value, dict) and "categories" in value:
            return value
    for value in found:
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            return value
    if first_error is not None:
        raise ValueError(first_error)
    for value in found:
        if isinstance(value, dict):
            return value
    raise ValueError("no JSON object found")


def _as_member_number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("#").isdigit():
        return int(value.strip().lstrip("#"))
    return None


def parse_rubric_answer(text: str, batch: Sequence[str]) -> list[Category]:
    """Parse and validate one teacher answer for ``batch`` (the numbered instructions it saw).

    Returns categories whose members are instruction *texts*. Raises ValueError naming what is wrong.
    Members are 1-based numbers into the batch; an instruction listed twice stays in its first category;
    categories left without members are dropped (they cannot be matched against).
    """
    data = extract_json_object(text)
    if isinstance(data, list):  # a bare list of categories is accepted
        data = {"categories": data}
    cats = data.get("categories")
    if not isinstance(cats, list) or not cats:
        raise ValueError("the JSON object has no non-empty list 'categories'")
    n = len(batch)
    seen: set[int] = set()
    out: list[Category] = []
    for i, c in enumerate(cats):
        if not isinstance(c, dict):
            raise ValueError(f"categories[{i}] is a {type(c).__name__}, not an object")
        name = c.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"categories[{i}].name must be a non-empty string, got {name!r}")
        crit = {}
        for key in ("good", "bad"):
            value = c.get(key, [])
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise ValueError(f"categories[{i}] ({name!r}).{key} must be a list of non-empty strings")
            crit[key] = [" ".join(v.split()) for v in value]
        if not crit["good"] and not crit["bad"]:
            raise ValueError(f"categories[{i}] ({name!r}) has neither 'good' nor 'bad' criteria")
        raw_members = c.get("members", [])
        if not isinstance(raw_members, list):
            raise ValueError(f"categories[{i}] ({name!r}).members must be a list of instruction numbers")
        members = []
        for m in raw_members:
            k = _as_member_number(m)
            if k is None:
                raise ValueError(f"categories[{i}] ({name!r}).members holds {m!r}, not an instruction number")
            if not 1 <= k <= n:
                raise ValueError(f"categories[{i}] ({name!r}).members holds {k}, outside 1..{n}")
            if k not in seen:
                seen.add(k)
                members.append(batch[k - 1])
        if members:
            out.append(Category(name=" ".join(name.split()), good=crit["good"], bad=crit["bad"], members=members))
    if not out:
        raise ValueError("no category has any member instruction")
    return out


# --------------------------------------------------------------------------------------------------
# Design with a teacher
# --------------------------------------------------------------------------------------------------


def _quote(text: str, limit: int = QUOTE_LIMIT) -> str:
    text = text if isinstance(text, str) else repr(text)
    if len(text) <= limit:
        return text
    return text[:limit] + f"... [{len(text) - limit} more characters]"


def sample_instructions(instructions: Sequence[str], sample_size: int, seed: int) -> list[str]:
    """K distinct non-empty instructions drawn with ``seed`` (all of them, shuffled, if there are fewer)."""
    unique = list(dict.fromkeys(s.strip() for s in instructions if isinstance(s, str) and s.strip()))
    rng = random.Random(seed)
    k = min(sample_size, len(unique))
    return rng.sample(unique, k)


def design_rubric(
    instructions: Sequence[str],
    teacher,
    sample_size: int,
    batch_size: int,
    max_categories: int,
    seed: int,
    max_repairs: int = 2,
    embedder=None,
    max_criteria: int = 6,
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> Rubric:
    """Have ``teacher`` classify a sample of ``instructions`` and write criteria per category (§3.2).

    Args:
        instructions: the training instructions (only ``sample_size`` of them are shown to the teacher).
        teacher: a :class:`citing_trl.teacher.Teacher` (anything with ``complete(requests, desc=...,
            max_tokens=..., temperature=...) -> list[str]`` and ``config.model``).
        sample_size: K, instructions sampled with ``seed``.
        batch_size: instructions per teacher request; the K/batch_size requests go out in one call.
        max_categories: M, most categories in the result (also the limit stated in each request).
        seed: sampling seed.
        max_repairs: how often an unusable answer is sent back for repair before giving up.
        embedder: optional sentence embedder (``encode``) used to pick the most similar category when
            categories have to be merged down to M; without it name/word overlap decides.
        max_criteria: most good (and most bad) criteria kept per merged category.
        max_tokens, temperature: passed to ``teacher.complete`` (None: the teacher's defaults).

    Raises:
        RubricDesignError: a batch's answer was still unusable after ``max_repairs`` repairs; the message
            names the batch, the problem and quotes (truncated) the last answer.
        ValueError: bad arguments (empty input, non-positive sizes).
    """
    for name, value in (("sample_size", sample_size), ("batch_size", batch_size),
                        ("max_categories", max_categories)):
        if value < 1:
            raise ValueError(f"design_rubric: {name} must be >= 1, got {value}")
    if max_repairs < 0:
        raise ValueError(f"design_rubric: max_repairs must be >= 0, got {max_repairs}")
    sample = sample_instructions(instructions, sample_size, seed)
    if not sample:
        raise DataError("design_rubric: the curriculum has no non-empty instruction to sample from; check --dataset")
    batches = [sample[i:i + batch_size] for i in range(0, len(sample), batch_size)]
    kwargs = {"max_tokens": max_tokens, "temperature": temperature}

    answers = teacher.complete([rubric_design_messages(b, max_categories) for b in batches],
                               desc="rubric design", **kwargs)
    requests = len(batches)
    parsed: dict[int, list[Category]] = {}
    problems: dict[int, tuple[str, str]] = {}  # batch index -> (answer, problem)
    for i, text in enumerate(answers):
        try:
            parsed[i] = parse_rubric_answer(text, batches[i])
        except ValueError as err:
            problems[i] = (text, str(err))

    repairs = 0
    for attempt in range(1, max_repairs + 1):
        if not problems:
            break
        todo = sorted(problems)
        for i in todo:
            logger.warning("rubric design: batch %d/%d answer unusable (%s); asking for repair %d/%d",
                           i + 1, len(batches), problems[i][1], attempt, max_repairs)
        fixed = teacher.complete([rubric_repair_messages(rubric_design_messages(batches[i], max_categories),
                                                         *problems[i]) for i in todo],
                                 desc=f"rubric repair {attempt}", **kwargs)
        requests += len(todo)
        repairs += len(todo)
        for i, text in zip(todo, fixed):
            try:
                parsed[i] = parse_rubric_answer(text, batches[i])
                del problems[i]
            except ValueError as err:
                problems[i] = (text, str(err))

    if problems:
        i = min(problems)
        text, problem = problems[i]
        others = f" ({len(problems) - 1} other batch(es) failed too)" if len(problems) > 1 else ""
        if problem.startswith("invalid JSON"):
            others += " If the answer was cut off, raise the teacher's max_tokens or lower batch_size"
        raise RubricDesignError(
            f"rubric design: the teacher's answer for batch {i + 1}/{len(batches)} (instructions "
            f"{i * batch_size + 1}-{i * batch_size + len(batches[i])} of the {len(sample)} sampled) is unusable "
            f"after {max_repairs} repair request(s): {problem}{others}.\nLast answer:\n{_quote(text)}"
        )

    embed = None
    if embedder is not None:
        def embed(texts):
            return embedder.encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                                   show_progress_bar=False)

    categories = merge_categories([parsed[i] for i in range(len(batches))], max_categories, embed=embed,
                                  max_criteria=max_criteria)
    model = getattr(getattr(teacher, "config", None), "model", None)
    return Rubric(
        categories=categories,
        teacher_model=model,
        created=_dt.date.today().isoformat(),
        source="teacher",
        details={
            "sample_size": len(sample), "batch_size": batch_size, "batches": len(batches),
            "max_categories": max_categories, "seed": seed, "teacher_requests": requests, "repairs": repairs,
            "proposed_categories": sum(len(parsed[i]) for i in parsed),
        },
    )
