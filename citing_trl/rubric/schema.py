"""The rubric itself: categories of instructions with good/bad criteria, saved as ``rubric.json``.

A :class:`Rubric` holds the categories C = {c_1..c_M} of Algorithm 1 (line 5). Each :class:`Category` has a name,
the criteria that separate a good answer from a bad one (shown to the teacher when it revises), and *member*
instructions: the sampled instructions the teacher put in that category. Matching a new instruction to a
category (Eq. 1-2, :mod:`citing_trl.rubric.matching`) compares it with these members.

:meth:`Rubric.save` / :meth:`Rubric.load` write and read ``rubric.json`` (validated on load, errors name the
field); :func:`embeddings_path_for` is where the member embeddings are cached beside it.
:func:`default_rubric` is the built-in rubric: the five kinds of task the paper reports for Alpaca (its Table 4),
with criteria and example members written for this project; it needs no teacher.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from citing_trl.errors import UserError

RUBRIC_FORMAT_VERSION = 1


class RubricDesignError(UserError, RuntimeError):
    """The teacher's rubric answer stayed unusable after the allowed repairs, or a rubric file is invalid.
    The message names the batch (or file) and quotes the offending text."""


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
        """Write ``rubric.json``. With a :class:`~citing_trl.rubric.matching.RubricMatcher`, also write its
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
