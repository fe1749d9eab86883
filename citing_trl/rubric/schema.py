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
from importlib import resources
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

DEFAULT_RUBRIC_FILE = "default_rubric.json"  # package data beside this module, in the format Rubric.save writes


def default_rubric() -> Rubric:
    """The built-in rubric: the five kinds of task of the paper's Table 4, no teacher needed. It is read from
    ``citing_trl/rubric/default_rubric.json`` (a saved ``rubric.json``: copy it to start a rubric of your own);
    every call returns a new object."""
    text = resources.files("citing_trl.rubric").joinpath(DEFAULT_RUBRIC_FILE).read_text(encoding="utf-8")
    return Rubric.from_dict(json.loads(text), where=f"citing_trl/rubric/{DEFAULT_RUBRIC_FILE}")
