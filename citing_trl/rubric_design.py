"""Rubric design with a teacher LLM (paper §3.2, Algorithm 1 line 5).

Asking the teacher for criteria instruction by instruction does not scale, so the paper has the teacher
*classify* a sample of instructions into M kinds of task and write good/bad criteria once per kind. This
module does that:

1. sample K instructions (``sample_size``) with a fixed seed;
2. send them in batches of ``batch_size`` numbered instructions, all batches in one
   :meth:`Teacher.complete` call (so an OpenAI-compatible backend runs them concurrently), using
   :func:`citing_trl.prompts.rubric_design_messages`;
3. parse each answer robustly (code fences and chatter around the JSON are tolerated), validate it, and
   ask the teacher to repair an unusable answer (:func:`citing_trl.prompts.rubric_repair_messages`) up to
   ``max_repairs`` times before giving up with :class:`RubricDesignError`;
4. merge the per-batch categories into at most M: identical names (after normalisation) merge first, then
   the smallest category is folded into its most similar one until M remain.

The number of teacher requests is ``ceil(K / batch_size)`` plus the repairs; it never depends on the size
of the data set. The result is a :class:`Rubric`: categories with criteria and *member* instructions (the
sampled instructions the teacher put in each category). Matching new instructions to a category
(Eq. 1-2) compares them with these members; see :mod:`citing_trl.rubric_matching`.

:func:`default_rubric` is a built-in rubric with the five kinds of task the paper reports for Alpaca
(its Table 4), with criteria and example members written for this project; it needs no teacher.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from citing_trl.prompts import rubric_design_messages, rubric_repair_messages

logger = logging.getLogger(__name__)

RUBRIC_FORMAT_VERSION = 1
QUOTE_LIMIT = 600  # characters of a bad teacher answer quoted in an error message


class RubricDesignError(RuntimeError):
    """The teacher's rubric answer stayed unusable after the allowed repairs, or a rubric file is invalid.
    The message names the batch (or file) and quotes the offending text."""


# --------------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------------


@dataclass
class Category:
    """One kind of instruction and the criteria that separate good from bad answers to it."""

    name: str = field(metadata={"help": "Short name of the kind of task, e.g. 'Creative generation'."})
    good: list[str] = field(default_factory=list, metadata={"help": "What a strong answer does."})
    bad: list[str] = field(default_factory=list, metadata={"help": "What a weak answer does."})
    members: list[str] = field(
        default_factory=list,
        metadata={"help": "Instructions that belong to this category; matching (Eq. 2) compares new "
                          "instructions with these."},
    )

    def criteria_text(self) -> str:
        """The criteria c as the revision prompt shows them: two short bulleted lists."""
        parts = []
        if self.good:
            parts.append("A good answer:\n" + "\n".join(f"- {c}" for c in self.good))
        if self.bad:
            parts.append("A bad answer:\n" + "\n".join(f"- {c}" for c in self.bad))
        return "\n".join(parts)

    def to_dict(self) -> dict:
        return {"name": self.name, "good": list(self.good), "bad": list(self.bad), "members": list(self.members)}


@dataclass
class Rubric:
    """The categories C = {c_1..c_M} with criteria and members, plus where they came from."""

    categories: list[Category] = field(metadata={"help": "The M categories."})
    teacher_model: str | None = field(
        default=None, metadata={"help": "Model that designed the rubric; None for the built-in one."}
    )
    created: str = field(
        default_factory=lambda: _dt.date.today().isoformat(), metadata={"help": "ISO date of creation."}
    )
    source: str = field(default="teacher", metadata={"help": "'default' (built in) or 'teacher' (designed)."})
    details: dict = field(
        default_factory=dict,
        metadata={"help": "How it was designed: sample size, batch size, seed, teacher requests, repairs."},
    )

    # ---------------------------------------------------------------- lookup
    @property
    def names(self) -> list[str]:
        return [c.name for c in self.categories]

    def category(self, name: str) -> Category:
        for c in self.categories:
            if c.name == name:
                return c
        raise KeyError(f"rubric has no category {name!r}; categories are {self.names}")

    def criteria_for(self, name: str) -> str:
        """criteria_text() of the category called ``name`` (KeyError listing the names if there is none)."""
        return self.category(name).criteria_text()

    def member_index(self) -> dict[str, str]:
        """Exact member text -> category name (first category wins if a text appears twice)."""
        index: dict[str, str] = {}
        for c in self.categories:
            for m in c.members:
                index.setdefault(m, c.name)
        return index

    # ---------------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        return {
            "format_version": RUBRIC_FORMAT_VERSION,
            "source": self.source,
            "teacher_model": self.teacher_model,
            "created": self.created,
            "details": self.details,
            "categories": [c.to_dict() for c in self.categories],
        }

    def save(self, path: str | Path, matcher=None) -> Path:
        """Write ``rubric.json``. With a :class:`~citing_trl.rubric_matching.RubricMatcher`, also write its
        member embeddings next to it (``<stem>.embeddings.npz``) so they are not computed again."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)
        if matcher is not None:
            matcher.save_embeddings(embeddings_path_for(path))
        return path

    @classmethod
    def from_dict(cls, data: Any, where: str = "rubric") -> Rubric:
        if not isinstance(data, dict):
            raise RubricDesignError(f"{where}: expected a JSON object, got {type(data).__name__}")
        cats = data.get("categories")
        if not isinstance(cats, list) or not cats:
            raise RubricDesignError(f"{where}: 'categories' must be a non-empty list")
        categories = []
        for i, c in enumerate(cats):
            at = f"{where}: categories[{i}]"
            if not isinstance(c, dict):
                raise RubricDesignError(f"{at} must be an object, got {type(c).__name__}")
            name = c.get("name")
            if not isinstance(name, str) or not name.strip():
                raise RubricDesignError(f"{at}.name must be a non-empty string, got {name!r}")
            lists = {}
            for key in ("good", "bad", "members"):
                value = c.get(key, [])
                if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                    raise RubricDesignError(f"{at} ({name!r}).{key} must be a list of non-empty strings")
                lists[key] = list(value)
            if not lists["good"] and not lists["bad"]:
                raise RubricDesignError(f"{at} ({name!r}) has no criteria: 'good' and 'bad' are both empty")
            if not lists["members"]:
                raise RubricDesignError(f"{at} ({name!r}) has no members; matching needs at least one")
            categories.append(Category(name=name.strip(), **lists))
        names = [c.name for c in categories]
        if len(set(names)) != len(names):
            dup = [n for n, k in Counter(names).items() if k > 1]
            raise RubricDesignError(f"{where}: category names must be unique, repeated: {dup}")
        return cls(
            categories=categories,
            teacher_model=data.get("teacher_model"),
            created=str(data.get("created") or _dt.date.today().isoformat()),
            source=str(data.get("source") or "teacher"),
            details=dict(data.get("details") or {}),
        )

    @classmethod
    def load(cls, path: str | Path) -> Rubric:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"rubric file {path} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise RubricDesignError(f"{path}: not valid JSON ({err})") from err
        return cls.from_dict(data, where=str(path))


def embeddings_path_for(rubric_path: str | Path) -> Path:
    """Where a rubric's member embeddings live: ``rubric.json`` -> ``rubric.embeddings.npz``."""
    p = Path(rubric_path)
    return p.with_name(p.stem + ".embeddings.npz")


# --------------------------------------------------------------------------------------------------
# Built-in rubric (paper Table 4, the project's own wording and examples)
# --------------------------------------------------------------------------------------------------

DEFAULT_RUBRIC_DATE = "2026-11-23"

_DEFAULT_CATEGORIES: list[dict] = [
    {
        "name": "Factual knowledge",
        "good": [
            "States the correct fact directly, in the first sentence.",
            "Names, dates, numbers and units are exact and agree with well-established sources.",
            "Stays short: at most a line of context that helps the reader.",
            "Says plainly when there is no single accepted answer or when the question rests on a false premise.",
        ],
        "bad": [
            "Gets the fact wrong, or hedges between several answers.",
            "Buries the answer under long background or unrelated trivia.",
            "Invents details, figures or sources to sound authoritative.",
            "Answers a different question from the one asked.",
        ],
        "members": [
            "What is the capital city of Australia?",
            "Who painted the ceiling of the Sistine Chapel?",
            "In which year did the Berlin Wall fall?",
            "What is the chemical symbol for gold?",
            "How many bones are there in the adult human body?",
            "Name the longest river in South America.",
            "Which planet in our solar system has the most moons?",
            "What language is mainly spoken in Brazil?",
            "Who wrote the novel One Hundred Years of Solitude?",
            "What is the boiling point of water at sea level in Fahrenheit?",
            "Which country has the largest population in Africa?",
            "Name three countries that share a border with Germany.",
        ],
    },
    {
        "name": "Explanation/definition",
        "good": [
            "Opens with a plain one- or two-sentence statement of what the thing is or why it happens.",
            "Builds the explanation step by step, from the basic idea to the details.",
            "Uses everyday words and explains any technical term it cannot avoid.",
            "Gives a concrete example or analogy that makes the idea easy to grasp.",
            "Is accurate and complete enough that a newcomer could restate it in their own words.",
        ],
        "bad": [
            "Defines a term with itself or with equally obscure jargon.",
            "Is a loose heap of facts with no logical order.",
            "Simplifies so much that the explanation becomes wrong.",
            "Wanders into tangents that do not help understanding.",
        ],
        "members": [
            "Explain how vaccines train the immune system.",
            "What does the term opportunity cost mean?",
            "Describe the process of photosynthesis in simple terms.",
            "Define machine learning and give an example.",
            "Explain why the sky looks blue during the day.",
            "What is the difference between weather and climate?",
            "Explain the concept of supply and demand.",
            "How does a blockchain keep its records secure?",
            "Describe what happens during a solar eclipse.",
            "Explain the meaning of the idiom 'break the ice'.",
            "What is inflation and why does it happen?",
        ],
    },
    {
        "name": "Analysis/evaluation",
        "good": [
            "Identifies the key factors, sides or criteria before passing judgement.",
            "Backs every claim with reasons, evidence or examples.",
            "Weighs strengths against weaknesses and makes comparisons explicit.",
            "Acknowledges trade-offs, uncertainty and other reasonable views.",
            "Ends with a clear conclusion or recommendation that follows from the reasoning.",
        ],
        "bad": [
            "Gives an opinion with no reasons.",
            "Looks at one side only or ignores obvious counter-arguments.",
            "Describes or summarises instead of analysing.",
            "Reaches a conclusion that does not follow from what was said.",
        ],
        "members": [
            "Compare the advantages and disadvantages of working from home.",
            "Evaluate the argument that social media does more harm than good.",
            "Analyze the main causes of the 2008 financial crisis.",
            "Assess the strengths and weaknesses of the following business plan.",
            "Which is the better first language for a beginner programmer, Python or Java? Justify your answer.",
            "Critique the following paragraph for clarity and logic.",
            "Analyze the tone and mood of the given poem.",
            "What are the likely long-term effects of raising the minimum wage?",
            "Identify the logical fallacy in this statement and explain why the reasoning is flawed.",
            "Compare renewable and fossil energy sources in terms of cost and environmental impact.",
            "Is it ethical for companies to collect user data for targeted advertising? Discuss.",
        ],
    },
    {
        "name": "Creative generation",
        "good": [
            "Respects every stated constraint: form, length, number of items, topic and tone.",
            "Is original and specific rather than generic or cliched.",
            "Has a coherent shape: a story with an arc, a poem with rhythm, a list of clearly distinct items.",
            "Uses vivid language that suits the intended audience.",
        ],
        "bad": [
            "Ignores the requested form, count or theme.",
            "Leans on stock phrases and predictable ideas.",
            "Repeats itself or pads a list with near-duplicates.",
            "Is flat or incoherent, or stops abruptly.",
        ],
        "members": [
            "Write a short story about a robot who learns to paint.",
            "Compose a haiku about autumn rain.",
            "Come up with five names for a new coffee shop.",
            "Write a catchy slogan for a reusable water bottle.",
            "Generate a list of ideas for a child's birthday party.",
            "Write a poem about the ocean at night.",
            "Create a dialogue between a detective and a nervous suspect.",
            "Invent a new holiday and describe how people celebrate it.",
            "Write the opening paragraph of a fantasy novel.",
            "Brainstorm three unusual uses for an old umbrella.",
            "Write a limerick about a forgetful cat.",
        ],
    },
    {
        "name": "Practical application",
        "good": [
            "Carries out exactly the requested operation (calculation, conversion, translation, rewrite, code, "
            "classification) and gets it right.",
            "Shows the working when the task involves arithmetic or several steps.",
            "Gives the result in the format asked for, easy to find.",
            "Keeps the meaning and content of any given input unless told to change them.",
            "Gets the details right: units, edge cases, spelling of names.",
        ],
        "bad": [
            "Produces a wrong result or an arithmetic slip.",
            "Describes how one would do the task instead of doing it.",
            "Changes, drops or adds content the task did not ask to change.",
            "Ignores the required output format or language.",
        ],
        "members": [
            "Convert 25 degrees Celsius to Fahrenheit.",
            "Translate 'Where is the train station?' into Spanish.",
            "Calculate the area of a circle with a radius of 4 cm.",
            "Rewrite the following sentence in the passive voice.",
            "Sort these numbers in ascending order: 42, 7, 19, 3, 88.",
            "Write a Python function that reverses a string.",
            "Correct the grammar in this sentence: 'She don't like apples.'",
            "Summarize the following article in two sentences.",
            "Classify the following animals as mammals or reptiles: snake, whale, lizard, bat.",
            "Edit this email so that it sounds more formal.",
            "Identify the verbs in the following sentence.",
            "Extract all the dates mentioned in the text below.",
        ],
    },
]


def default_rubric() -> Rubric:
    """The built-in rubric: the five kinds of task of the paper's Table 4, no teacher needed."""
    cats = [
        Category(name=c["name"], good=list(c["good"]), bad=list(c["bad"]), members=list(c["members"]))
        for c in _DEFAULT_CATEGORIES
    ]
    return Rubric(categories=cats, teacher_model=None, created=DEFAULT_RUBRIC_DATE, source="default")


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
# Merging categories across batches
# --------------------------------------------------------------------------------------------------

_FILLER = {"instruction", "instructions", "task", "tasks", "question", "questions", "request", "requests",
           "type", "types", "and", "or", "the", "of", "a", "an", "for"}
_STOP = _FILLER | {"to", "in", "on", "is", "are", "what", "how", "this", "that", "with", "it", "be", "by",
                   "given", "following", "following:", "me", "you", "your", "from", "at", "as", "do", "does"}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def normalize_name(name: str) -> str:
    """Key under which category names merge: lower case, punctuation gone, filler words ('tasks',
    'questions', 'and', ...) dropped unless nothing else is left."""
    words = _words(name)
    kept = [w for w in words if w not in _FILLER]
    return " ".join(kept or words)


def _dedupe(items: Sequence[str]) -> list[str]:
    seen, out = set(), []
    for it in items:
        key = " ".join(_words(it))
        if key and key not in seen:
            seen.add(key)
            out.append(it)
    return out


@dataclass
class _Group:
    name: str
    good: list[str]
    bad: list[str]
    members: list[str]
    order: int  # first appearance, for deterministic ties
    good_counts: Counter = field(default_factory=Counter)
    bad_counts: Counter = field(default_factory=Counter)

    def absorb(self, other: _Group) -> None:
        have = set(self.members)
        self.members += [m for m in other.members if m not in have]
        self.good += other.good
        self.bad += other.bad


def _rank_criteria(items: list[str], limit: int) -> list[str]:
    """Dedupe (case/punctuation-insensitive), most frequently proposed first, then first proposed."""
    counts = Counter(" ".join(_words(it)) for it in items)
    unique = _dedupe(items)
    order = {it: i for i, it in enumerate(unique)}
    unique.sort(key=lambda it: (-counts[" ".join(_words(it))], order[it]))
    return unique[:limit]


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def merge_categories(
    per_batch: Sequence[Sequence[Category]],
    max_categories: int,
    embed: Callable[[list[str]], Any] | None = None,
    max_criteria: int = 6,
) -> list[Category]:
    """Merge the categories proposed for each batch into at most ``max_categories``.

    1. Categories whose :func:`normalize_name` agree merge (members unioned, criteria pooled).
    2. While more than ``max_categories`` remain, the smallest (fewest members; ties: latest seen) is folded
       into the most similar other one. Similarity is the cosine of the mean member embeddings when
       ``embed`` (texts -> 2-D array of normalised embeddings) is given, else the Jaccard overlap of the
       content words of names and members. Ties go to the larger, then earlier, category. The merged
       category keeps the name of the one it was folded into.
    3. Criteria are deduplicated and at most ``max_criteria`` per side are kept, those proposed by most
       batches first.
    Deterministic for a given input.
    """
    if max_categories < 1:
        raise ValueError(f"max_categories must be >= 1, got {max_categories}")
    groups: dict[str, _Group] = {}
    for cats in per_batch:
        for c in cats:
            key = normalize_name(c.name)
            if key in groups:
                groups[key].absorb(_Group(c.name, list(c.good), list(c.bad), list(c.members), 0))
            else:
                groups[key] = _Group(c.name, list(c.good), list(c.bad), list(c.members), len(groups))
    items = list(groups.values())
    # an instruction may only belong to one category: keep it where it first appeared (by group order)
    owner: dict[str, int] = {}
    for g in items:
        for m in g.members:
            owner.setdefault(m, g.order)
    for g in items:
        g.members = [m for m in g.members if owner[m] == g.order]
    items = [g for g in items if g.members]

    if len(items) > max_categories:
        if embed is not None:
            import numpy as np

            all_members = [m for g in items for m in g.members]
            emb = np.asarray(embed(all_members), dtype=np.float64)
            row = {m: i for i, m in enumerate(all_members)}

            def centroid(g: _Group):
                v = emb[[row[m] for m in g.members]].mean(axis=0)
                return v / (np.linalg.norm(v) or 1.0)

            def similarity(a: _Group, b: _Group) -> float:
                return float(centroid(a) @ centroid(b))
        else:

            def bag(g: _Group) -> set:
                return {w for t in [g.name, *g.members] for w in _words(t) if w not in _STOP}

            def similarity(a: _Group, b: _Group) -> float:
                return _jaccard(bag(a), bag(b))

        while len(items) > max_categories:
            smallest = min(items, key=lambda g: (len(g.members), -g.order))
            rest = [g for g in items if g is not smallest]
            target = max(rest, key=lambda g: (similarity(smallest, g), len(g.members), -g.order))
            logger.info("rubric design: merging category %r (%d members) into %r",
                        smallest.name, len(smallest.members), target.name)
            target.absorb(smallest)
            items = rest

    return [
        Category(name=g.name, good=_rank_criteria(g.good, max_criteria), bad=_rank_criteria(g.bad, max_criteria),
                 members=list(g.members))
        for g in sorted(items, key=lambda g: g.order)
    ]


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
        raise ValueError("design_rubric: no non-empty instruction to sample from")
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


__all__ = [
    "Category", "Rubric", "RubricDesignError", "default_rubric", "design_rubric", "embeddings_path_for",
    "extract_json_object", "merge_categories", "normalize_name", "parse_rubric_answer", "sample_instructions",
]
