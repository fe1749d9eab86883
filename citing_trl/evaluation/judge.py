"""Pairwise judge (paper §4.1): which of two answers is more articulate, in-depth and comprehensive.

It runs over the project's one teacher client (:class:`citing_trl.teacher.Teacher`), so it shares its cache,
usage ledger, retries and resume: a killed evaluation rerun with the same cache sends no request twice.

* ``mode="joint"`` (default): one request per order returns every aspect as one small JSON object
  (:func:`citing_trl.prompts.joint_judge_messages`), a third of the calls of
* ``mode="per_aspect"``: one request per order and aspect (:func:`citing_trl.prompts.judge_messages`), the
  paper's setting.

**Both orders.** Every pair is judged with ``a`` shown first and again with ``b`` shown first. An aspect's
verdict is ``"a"`` (or ``"b"``) only when both orders pick that answer; any disagreement between the orders
(a flip, or a win in one order and a tie in the other) is ``"tie"``. If either order stays unreadable the
verdict is ``"unparsed"``, left out of every rate and counted.

**Parsing.** A reply is read as JSON (also inside a ```json fence, or with single quotes), else as lines
like ``articulate: A``, else as one plain verdict that then answers every aspect asked: a bare ``A`` /
``B`` / ``tie`` (the whole reply or its first line) or a sentence such as "answer B is better" (see
:func:`_single_verdict`). An
unreadable or incomplete reply is asked again up to ``max_parse_retries`` times with a different request:
the conversation continues with the judge's own reply and a format reminder
(:func:`citing_trl.prompts.judge_repair_messages`), so its cache key differs and a rerun replays it for free.

:attr:`PairwiseJudge.stats` gives the position-consistency rate (orders that agree, over (pair, aspect)
judgements with both orders readable) and the share of first-position wins among decisive single-order
verdicts (0.5 means no position bias).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from citing_trl.errors import DataError
from citing_trl.prompts import JUDGE_ASPECTS, joint_judge_messages, judge_messages, judge_repair_messages

VERDICTS = ("a", "b", "tie", "unparsed")
MODES = ("joint", "per_aspect")

_A = {"a", "answer a", "answera", "a is better", "first", "first answer", "1", "response a"}
_B = {"b", "answer b", "answerb", "b is better", "second", "second answer", "2", "response b"}
_TIE = {"tie", "equal", "draw", "neither", "both", "same", "tied", "equally good"}


def _key(text: str) -> str:
    return re.sub(r"[^a-z]", "", str(text).lower())


def parse_choice(value) -> str | None:
    """"A", "B" or "tie" from a verdict value ("A", "answer b", "Tie.", ...); None if it is none of them."""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        return None
    text = re.sub(r"\s+", " ", str(value).strip().strip("\"'`*.!").strip().lower())
    if text in _A:
        return "A"
    if text in _B:
        return "B"
    if text in _TIE:
        return "tie"
    return None


def _json_objects(text: str) -> list[dict]:
    fenced = re.findall(r"```(?:json)?\s*(.*?)```", text, flags=re.DOTALL | re.IGNORECASE)
    out = []
    decoder = json.JSONDecoder()
    for chunk in [*fenced, text]:
        for start in [m.start() for m in re.finditer(r"\{", chunk)]:
            try:
                obj, _ = decoder.raw_decode(chunk[start:])
            except json.JSONDecodeError:
                end = chunk.find("}", start)
                try:
                    obj = ast.literal_eval(chunk[start:end + 1]) if end > start else None
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    obj = None
            if isinstance(obj, dict):
                out.append(obj)
    return out


def parse_verdicts(text: str, keys: Sequence[str]) -> dict[str, str]:
    """Read "A" / "B" / "tie" for each of ``keys`` (aspect names, or ``["winner"]``) from a judge reply.
    Keys that cannot be read are missing from the result."""
    text = text or ""
    wanted = {_key(k): k for k in keys}
    found: dict[str, str] = {}
    for obj in _json_objects(text):
        for k, v in obj.items():
            name = wanted.get(_key(k))
            choice = parse_choice(v)
            if name and choice and name not in found:
                found[name] = choice
        if len(found) == len(keys):
            return found
    for k in keys:  # lines like "articulate: A" or "In-depth - tie"
        if k in found:
            continue
        label = r"[\s_-]*".join(re.escape(part) for part in re.split(r"[\s_-]+", k))
        m = re.search(rf"{label}\W{{0,4}}[:=\-]\s*\W{{0,2}}(answer [ab]|[ab]|tie)\b", text, flags=re.IGNORECASE)
        if m:
            found[k] = parse_choice(m.group(1))
    if not found:  # a bare verdict answers every key
        choice = _single_verdict(text)
        if choice:
            found = {k: choice for k in keys}
    return found


_SINGLE = [
    re.compile(r"""\b(?:answer|response)\s+["'*]*([AB])["'*]*\s+is\s+(?:the\s+)?(?:better|best|stronger)""", re.I),
    re.compile(r"""\b(?:winner|verdict|better\s+(?:answer|one)|answer|choice)\s+is\s*:?\s*(?:answer\s+)?["'*]*([AB])["'*]*(?=[\s.,;:!)]*(?:$|\n))""",
               re.I | re.M),
    re.compile(r"""\bI\s+(?:prefer|choose|pick)\s+(?:answer\s+)?["'*]*([AB])\b""", re.I),
]


def _single_verdict(text: str) -> str | None:
    """One verdict for every aspect from a reply that is not JSON: the whole reply or its first line is
    "A" / "B" / "tie" (quotes, markdown and a final full stop allowed), or it says "answer B is better",
    "the better answer is A", "the answer is "A"", "I prefer B". Several different letters -> None.
    ("A 18% tip ..." is not a verdict: the letter must stand alone on its line or follow those words.)"""
    text = text.strip()
    first = text.splitlines()[0] if text else ""
    for candidate in (text, first, re.sub(r"^(the )?(winner|verdict|better answer)( is)?:?", "", first, flags=re.I)):
        if choice := parse_choice(candidate.strip("#*_ \t")):
            return choice
    letters = {m.group(1).upper() for pattern in _SINGLE for m in pattern.finditer(text)}
    return letters.pop() if len(letters) == 1 else None


_TO_SYSTEM = ({"A": "a", "B": "b", "tie": "tie"}, {"A": "b", "B": "a", "tie": "tie"})  # by order


def combine(first: str | None, second: str | None) -> str:
    """The both-orders rule. ``first``: the raw verdict ("A"/"B"/"tie"/None) with ``a`` shown first;
    ``second``: with ``b`` shown first. Agreement gives that system; any disagreement gives "tie"; an
    unreadable order gives "unparsed"."""
    if first is None or second is None:
        return "unparsed"
    one, two = _TO_SYSTEM[0][first], _TO_SYSTEM[1][second]
    return one if one == two else "tie"


@dataclass
class JudgeStats:
    """Counts over every :meth:`PairwiseJudge.compare` call."""

    pairs: int = 0
    judgements: int = 0  # pairs x aspects
    unparsed: int = 0  # judgements with an order that stayed unreadable (left out of the rates)
    unparsed_orders: int = 0  # single-order verdicts that stayed unreadable
    consistent: int = 0  # judgements whose two orders agree
    first_position_wins: int = 0  # decisive single-order verdicts for the answer shown first
    decisive_orders: int = 0  # single-order verdicts that were not "tie"
    reasked: int = 0  # requests asked again because the reply could not be read

    @property
    def consistency_rate(self) -> float | None:
        readable = self.judgements - self.unparsed
        return self.consistent / readable if readable else None

    @property
    def first_position_win_share(self) -> float | None:
        return self.first_position_wins / self.decisive_orders if self.decisive_orders else None

    def add(self, orders: dict[str, list]) -> None:
        """Count one pair: ``orders`` = {aspect: [raw with a first, raw with b first]}."""
        for first, second in orders.values():
            self.judgements += 1
            self.unparsed_orders += (first is None) + (second is None)
            for v in (first, second):
                if v in ("A", "B"):
                    self.decisive_orders += 1
                    self.first_position_wins += v == "A"
            if first is None or second is None:
                self.unparsed += 1
            elif _TO_SYSTEM[0][first] == _TO_SYSTEM[1][second]:
                self.consistent += 1

    @classmethod
    def of(cls, details: Sequence[dict]) -> JudgeStats:
        """Stats of some :meth:`PairwiseJudge.compare_detailed` results (e.g. one comparison's)."""
        stats = cls(pairs=len(details))
        for d in details:
            stats.add(d["orders"])
        return stats

    def summary(self) -> dict:
        return {**asdict(self), "consistency_rate": self.consistency_rate,
                "first_position_win_share": self.first_position_win_share}


def verdict_tokens(mode: str, num_aspects: int) -> int:
    """The default token budget of one verdict: a short JSON object (``joint``) or one word (``per_aspect``)."""
    return 24 + 12 * num_aspects if mode == "joint" else 24


class PairwiseJudge:
    """``PairwiseJudge(teacher).compare([{"instruction", "input", "a", "b"}, ...])`` -> one dict per item,
    aspect -> "a" | "b" | "tie" | "unparsed" (after the both-orders rule)."""

    def __init__(self, teacher, aspects: Sequence[str] | None = None, mode: str = "joint",
                 max_parse_retries: int = 2, max_tokens: int | None = None):
        if mode not in MODES:
            raise ValueError(f"PairwiseJudge: mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.aspects = tuple(aspects) if aspects else tuple(JUDGE_ASPECTS)
        if unknown := [a for a in self.aspects if a not in JUDGE_ASPECTS]:
            raise ValueError(f"PairwiseJudge: unknown aspect(s) {unknown}; expected some of {list(JUDGE_ASPECTS)}")
        if max_parse_retries < 0:
            raise ValueError(f"PairwiseJudge: max_parse_retries must be >= 0, got {max_parse_retries}")
        self.teacher, self.mode, self.max_parse_retries = teacher, mode, max_parse_retries
        self.max_tokens = max_tokens if max_tokens is not None else verdict_tokens(mode, len(self.aspects))
        self.stats = JudgeStats()

    # one "unit" = one request in one order; it answers ``keys`` for ``aspects``
    def _units(self, item: dict, order: int) -> list[tuple[list[dict], list[str], list[str]]]:
        first, second = (item["a"], item["b"]) if order == 0 else (item["b"], item["a"])
        instruction, input = item["instruction"], item.get("input") or ""
        if self.mode == "joint":
            return [(joint_judge_messages(instruction, input, first, second, self.aspects), list(self.aspects),
                     list(self.aspects))]
        return [(judge_messages(instruction, input, first, second, a), ["winner"], [a]) for a in self.aspects]

    @staticmethod
    def _check(items: Sequence[dict]) -> None:
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise DataError(f"judge item #{i}: expected a dict with instruction, input, a, b")
            for f in ("instruction", "a", "b"):
                if not isinstance(item.get(f), str):
                    raise DataError(f"judge item #{i} (id {item.get('id', '?')}): field {f!r} must be a string, "
                                     f"got {type(item.get(f)).__name__}")

    def _ask(self, units: list[tuple[list[dict], list[str]]], desc: str) -> list[dict[str, str]]:
        """Send every unit; re-ask unreadable ones (with a different request) up to max_parse_retries times."""
        convs = [conv for conv, _ in units]
        found: list[dict[str, str]] = [{} for _ in units]
        todo = list(range(len(units)))
        for attempt in range(self.max_parse_retries + 1):
            if not todo:
                break
            if attempt:
                self.stats.reasked += len(todo)
            texts = self.teacher.complete([convs[u] for u in todo], desc=f"{desc} (re-ask {attempt})" if attempt else desc,
                                          max_tokens=self.max_tokens)
            still = []
            for u, text in zip(todo, texts):
                keys = units[u][1]
                for k, v in parse_verdicts(text, keys).items():
                    found[u].setdefault(k, v)
                if len(found[u]) < len(keys):
                    still.append(u)
                    convs[u] = judge_repair_messages(convs[u], text, keys)
            todo = still
        return found

    def compare_detailed(self, items: Sequence[dict], desc: str = "judge") -> list[dict]:
        """Per item: ``{"verdicts": {aspect: final}, "orders": {aspect: [raw with a first, raw with b first]}}``
        (raw = "A" / "B" / "tie" / None, "A" meaning the answer shown first)."""
        self._check(items)
        units, where = [], []  # where[u] = (item index, order, aspects answered by its keys)
        for i, item in enumerate(items):
            for order in (0, 1):
                for conv, keys, aspects in self._units(item, order):
                    units.append((conv, keys))
                    where.append((i, order, aspects))
        found = self._ask(units, desc)
        raw = [{a: [None, None] for a in self.aspects} for _ in items]
        for (i, order, aspects), (_, keys), got in zip(where, units, found):
            for key, aspect in zip(keys, aspects):
                raw[i][aspect][order] = got.get(key)
        results = []
        self.stats.pairs += len(items)
        for orders in raw:
            self.stats.add(orders)
            results.append({"verdicts": {a: combine(*o) for a, o in orders.items()}, "orders": orders})
        return results

    def compare(self, items: Sequence[dict], desc: str = "judge") -> list[dict[str, str]]:
        return [r["verdicts"] for r in self.compare_detailed(items, desc)]
