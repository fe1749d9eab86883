"""Merging the categories the teacher proposed batch by batch into at most M (paper §3.2).

Rubric design (:mod:`citing_trl.rubric.design`) sends the sampled instructions to the teacher in batches, and
each batch comes back with its own categories. :func:`merge_categories` joins them: categories whose names agree
after :func:`normalize_name` merge first, then the smallest category is folded into its most similar one until
M remain; criteria are de-duplicated and the most often proposed kept. Deterministic for a given input.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from citing_trl.rubric.schema import Category

logger = logging.getLogger(__name__)


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
