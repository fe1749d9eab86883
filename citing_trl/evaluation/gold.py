"""Gold-answer metrics: the official definitions where one exists, per source (names of ``citing_trl.data``).

========================  ===========================================================================
source                    metrics (all fractions in [0, 1]; ``n`` = rows scored)
========================  ===========================================================================
``squad_v2``, ``quac``    ``exact_match``, ``f1`` exactly as the official SQuAD v2.0 script computes them
                          (:func:`normalize_answer`; token-overlap F1; a no-answer gold or prediction is the
                          empty string: both empty -> 1, one empty -> 0; max over the gold answers, and gold
                          answers that normalise to "" are dropped unless none is left). The project's
                          no-answer phrase :data:`citing_trl.data.NO_ANSWER` is the empty answer on both
                          sides: a gold equal to it, and a response in which it occurs (normalised, at word
                          boundaries), or an empty response. QuAC's own scorer (HEQ, leave-one-out F1) is
                          deliberately not used: the issue asks for SQuAD v2 scoring on both.
                          ``answer_in_response``: lenient, see below.
``nq_open``               ``exact_match`` as the NQ-open / EfficientQA scorer (ORQA's ``normalize_answer``:
                          Unicode NFD first, so a composed "é" equals "e" + combining accent, then SQuAD's
                          normalisation; max over aliases), ``f1`` (token F1 under the same normalisation, max
                          over aliases), ``answer_in_response`` (same normalisation).
``trivia_qa``             ``exact_match`` and ``f1`` as TriviaQA's official ``triviaqa_evaluation.py``: its
                          normalisation differs from SQuAD's in one way, punctuation (plus the quote marks
                          ‘ ’ ´ `) is REPLACED BY A SPACE instead of deleted, and ``_`` becomes a space, so
                          "U.S." -> "u s" (SQuAD: "us"). Max over the value and its aliases.
                          ``answer_in_response`` with the same normalisation.
``ifeval``                IFEval's four numbers (:mod:`citing_trl.evaluation.ifeval`): ``prompt_strict``,
                          ``prompt_loose`` (every constraint of the prompt followed) and ``inst_strict``,
                          ``inst_loose`` (pooled over all constraints of all rows, as IFEval reports them); the
                          row's constraints ride in its ``answers``. Primary: ``prompt_strict``.
``boolq``, ``piqa``,      ``accuracy`` of the answer extracted from free text (:func:`extract_yes_no`,
``openbookqa``,           :func:`extract_choice`), and ``answered``: the share of responses from which an
``commonsense_qa``        answer could be extracted at all (an unextracted response counts as wrong).
========================  ===========================================================================

``answer_in_response`` (not an official metric; free-form answers are long): 1 when some gold alias, normalised,
occurs in the normalised response as a whole-word sequence ("paris" in "it is paris france", never "par" in
"paris"). For squad_v2/quac a no-answer gold needs a no-answer response, and a no-answer response to an
answerable question gets 0.

Beside the metrics, :func:`gold_metrics` gives each source its chance level (:func:`chance_level`: the majority
answer for yes/no, 1/k for k options, always abstaining or the commonest answer for SQuAD v2 / QuAC, 0 for open
QA), flags a system whose interval reaches down to it, and splits SQuAD v2 / QuAC into HasAns / NoAns as the
official script does.
"""

from __future__ import annotations

import collections
import re
import string
import unicodedata
from collections.abc import Iterable, Sequence

from citing_trl.data.schema import NO_ANSWER
from citing_trl.evaluation import ifeval
from citing_trl.evaluation.stats import bootstrap_ci

SPAN_SOURCES = frozenset({"squad_v2", "quac"})
OPEN_SOURCES = frozenset({"nq_open", "trivia_qa"})
YES_NO_SOURCES = frozenset({"boolq"})
CHOICE_SOURCES = frozenset({"piqa", "openbookqa", "commonsense_qa"})
CONSTRAINT_SOURCES = frozenset({"ifeval"})
GOLD_SOURCES = SPAN_SOURCES | OPEN_SOURCES | YES_NO_SOURCES | CHOICE_SOURCES | CONSTRAINT_SOURCES
"""Sources that have gold metrics; every other source (alpaca, demo, a user file) scores ``{}``."""

METRICS: dict[str, tuple[str, ...]] = {
    **{s: ("exact_match", "f1", "answer_in_response") for s in SPAN_SOURCES | OPEN_SOURCES},
    **{s: ("accuracy", "answered") for s in YES_NO_SOURCES | CHOICE_SOURCES},
    **{s: ifeval.METRICS for s in CONSTRAINT_SOURCES},
}

# ------------------------------------------------------------------------------------------------
# Normalisation
# ------------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)
_TRIVIA_PUNCT = _PUNCT | {"‘", "’", "´", "`"}


def normalize_answer(text: str) -> str:
    """The official SQuAD (v1.1/v2.0, also EfficientQA) normalisation: lower case, delete punctuation,
    delete the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def normalize_nq(text: str) -> str:
    """The NQ-open / EfficientQA normalisation (ORQA's ``normalize_answer``, which the NQ-open README points to):
    Unicode NFD (canonical decomposition), then :func:`normalize_answer`. A composed "Café" and a decomposed
    "Cafe\u0301" are the same answer here; SQuAD's normalisation alone keeps them apart."""
    return normalize_answer(unicodedata.normalize("NFD", text))


def normalize_trivia(text: str) -> str:
    """TriviaQA's official normalisation: ``_`` -> space, lower case, punctuation -> SPACE, delete articles,
    collapse whitespace ("U.S." -> "u s")."""
    text = "".join(" " if ch in _TRIVIA_PUNCT else ch for ch in text.replace("_", " ").lower())
    return " ".join(_ARTICLES.sub(" ", text).split()).strip()


NORMALIZERS = {"trivia_qa": normalize_trivia, "nq_open": normalize_nq}
"""Sources whose official scorer normalises otherwise than SQuAD (:func:`normalize_answer`, every other source)."""


def _normalizer(source: str):
    return NORMALIZERS.get(source, normalize_answer)


def _token_f1(gold: str, pred: str, normalize) -> float:
    gold_toks, pred_toks = normalize(gold).split(), normalize(pred).split()
    if not gold_toks or not pred_toks:  # SQuAD v2: no-answer on either side scores 1 only if both agree
        return float(gold_toks == pred_toks)
    same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def _contains(haystack: str, needle: str) -> bool:
    """Whole-word containment of one normalised string in another."""
    return bool(needle) and f" {needle} " in f" {haystack} "


_NO_ANSWER_NORM = normalize_answer(NO_ANSWER)


def is_no_answer(response: str) -> bool:
    """A response abstains when it is empty or gives the project's no-answer phrase (normalised, whole words)."""
    norm = normalize_answer(response or "")
    return not norm or _contains(norm, _NO_ANSWER_NORM)


# ------------------------------------------------------------------------------------------------
# Answer extraction for yes/no and multiple choice
# ------------------------------------------------------------------------------------------------

_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def extract_yes_no(response: str) -> str | None:
    """The first standalone word "yes" or "no" (any case) in the response; None if neither occurs.
    ("Nobody", "eyes", "not" do not count: whole words only.)"""
    m = _YES_NO.search(response or "")
    return m.group(1).lower() if m else None


_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])[.)]\s+(.+?)\s*$")
_GOLD_KEY = re.compile(r"^\s*\(?([A-Z])[.)]\s*(.*)$", re.DOTALL)


def parse_options(input: str) -> dict[str, str]:
    """Options from an ``input`` of lines "A. text" / "A) text" ({} when there are none)."""
    options = {}
    for line in (input or "").splitlines():
        m = _OPTION_LINE.match(line)
        if m and m.group(1) not in options:
            options[m.group(1)] = m.group(2)
    return options


def _letter_mentions(response: str, labels: Iterable[str]) -> tuple[list[str], list[str]]:
    """(all letter mentions, mentions after an answer cue), in order of appearance."""
    labels = "".join(sorted(set(labels)))
    if not labels:
        return [], []
    L = f"[{re.escape(labels)}]"
    text = response.strip()
    if re.fullmatch(rf"\(?({L})\)?[.:)]?", text):  # the whole response is a label
        return [text.strip("().:")], [text.strip("().:")]
    cue = re.compile(rf"\b(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*\(?({L})\b(?![a-z'’])", re.IGNORECASE)
    # A label counts as (B), B) or B./B: followed by a space or the end; uppercase only, so the article "A"
    # ("A copper wire...") and letters inside words never count.
    mark = re.compile(rf"(?<![A-Za-z0-9])(?:\(({L})\)|({L})[.):](?=\s|$))")
    cued = [m.group(1).upper() for m in cue.finditer(text) if m.group(1).upper() in labels]
    found = [(m.start(), m.group(1) or m.group(2)) for m in mark.finditer(text)]
    lead = re.match(rf"({L})\s", text)  # "B is right": a leading bare label, except the article "A"
    if lead and lead.group(1) != "A":
        found.append((0, lead.group(1)))
    found += [(m.start(1), m.group(1).upper()) for m in cue.finditer(text) if m.group(1).upper() in labels]
    return [letter for _, letter in sorted(found)], cued


def extract_choice(response: str, options: dict[str, str]) -> str | None:
    """The option label a free-text response picks, or None. The rule, in order:

    1. Letters. A label letter counts when the whole response is that letter ("B", "(B)", "B."), or it
       appears as "(B)", "B)", "B." or "B:" (followed by a space or the end, not preceded by a letter or
       digit), or right after "answer", "answer is", "option" or "choice", or as the first word of the
       response ("C is right"; not for "A", which is also an article). Only UPPERCASE labels count, so the
       article "A" or a letter inside a word never does. One distinct letter mentioned -> that option.
       Several -> the letter after an answer cue if exactly one distinct letter follows a cue, else go on.
    2. Text. The options whose normalised text occurs in the normalised response as whole words, dropping
       any option whose text lies inside another matched option's text. Exactly one left -> that option.
    3. Otherwise None (counted wrong, and not ``answered``).
    """
    response = response or ""
    letters, cued = _letter_mentions(response, options)
    if len(set(letters)) == 1:
        return letters[0]
    if len(set(cued)) == 1:
        return cued[0]
    norm = normalize_answer(response)
    hits = {k: normalize_answer(v) for k, v in options.items() if _contains(norm, normalize_answer(v))}
    hits = {k: v for k, v in hits.items() if not any(v != w and _contains(w, v) for w in hits.values())}
    return next(iter(hits)) if len(hits) == 1 else None


def _gold_choice(answers: Sequence[str], input: str) -> tuple[str | None, dict[str, str]]:
    """(gold label, options) from a row's ``answers`` (["B. text", "text"]) and its ``input`` options."""
    options = parse_options(input)
    key = None
    m = _GOLD_KEY.match(answers[0]) if answers else None
    if m:
        key = m.group(1)
        text = m.group(2).strip() or (answers[1] if len(answers) > 1 else "")
    else:  # answers hold only the text: find its label among the options
        text = answers[0] if answers else ""
        key = next((k for k, v in options.items() if normalize_answer(v) == normalize_answer(text)), None)
    if key is not None and key not in options:  # no options in the input: only the gold one is known
        options = {**options, key: text}
    return key, options


# ------------------------------------------------------------------------------------------------
# Scoring one row
# ------------------------------------------------------------------------------------------------


def _span_golds(answers: Sequence[str]) -> list[str]:
    """SQuAD v2: the project's no-answer phrase is the empty gold; empty golds are dropped unless all are."""
    golds = ["" if a.strip() == NO_ANSWER else a for a in answers]
    golds = [g for g in golds if normalize_answer(g)]
    return golds or [""]


def score_response(source: str, response: str, answers: Sequence[str], input: str = "") -> dict[str, float]:
    """Per-row metric values in [0, 1] for a source in :data:`GOLD_SOURCES`; ``{}`` for other sources or when
    ``answers`` is empty. ``input`` (the row's options "A. ...") helps multiple-choice extraction."""
    answers = [a for a in (answers or []) if isinstance(a, str)]
    if source not in GOLD_SOURCES or not answers:
        return {}
    response = response or ""
    if source in CONSTRAINT_SOURCES:
        return ifeval.score(response, answers)
    if source in YES_NO_SOURCES:
        gold = answers[0].strip().lower()
        pred = extract_yes_no(response)
        return {"accuracy": float(pred is not None and pred == gold), "answered": float(pred is not None)}
    if source in CHOICE_SOURCES:
        key, options = _gold_choice(answers, input)
        pred = extract_choice(response, options)
        return {"accuracy": float(pred is not None and pred == key), "answered": float(pred is not None)}
    normalize = _normalizer(source)
    if source in SPAN_SOURCES:
        golds = _span_golds(answers)
        pred = "" if is_no_answer(response) else response
    else:
        golds, pred = [a for a in answers if a.strip()] or [""], response
    norm_pred = normalize(pred)
    exact = max(float(normalize(g) == norm_pred) for g in golds)
    f1 = max(_token_f1(g, pred, normalize) for g in golds)
    if golds == [""]:  # unanswerable: only an abstention is right
        inside = float(norm_pred == "")
    else:
        inside = float(any(_contains(norm_pred, normalize(g)) for g in golds if normalize(g)))
    return {"exact_match": exact, "f1": f1, "answer_in_response": inside}


def is_correct(source: str, response: str, answers: Sequence[str], input: str = "") -> bool | None:
    """The source's primary correctness: ``accuracy`` for boolq/piqa/openbookqa/commonsense_qa,
    ``answer_in_response`` for nq_open/trivia_qa/squad_v2/quac (no-answer handled); None without gold."""
    scores = score_response(source, response, answers, input)
    return bool(scores[primary_metric(scores)]) if scores else None


def primary_metric(scores: dict[str, float]) -> str:
    """The key of a row's primary correctness among its scores: ``accuracy`` for choice and yes/no sources,
    ``prompt_strict`` for constraint sources (every constraint followed), ``answer_in_response`` for open QA."""
    if "prompt_strict" in scores:
        return "prompt_strict"
    return "accuracy" if "accuracy" in scores else "answer_in_response"


def reference_overlap(response: str, answers: Sequence[str]) -> float | None:
    """Token-overlap F1 (SQuAD normalisation) of a response with its closest reference answer, for rows whose
    source has no gold metric but a reference text (the demo set, Alpaca). A proxy for closeness to the
    reference, NOT correctness: a long right answer worded differently scores low. None without answers."""
    answers = [a for a in (answers or []) if isinstance(a, str) and normalize_answer(a)]
    if not answers:
        return None
    return max(_token_f1(a, response or "", normalize_answer) for a in answers)


def fix_break(before: Sequence[bool | None], after: Sequence[bool | None]) -> dict:
    """Counts of how correctness changed between two steps over the same rows: ``wrong_to_right`` (fixed),
    ``right_to_wrong`` (broken), ``right_to_right``, ``wrong_to_wrong``, and ``no_gold`` (either is None)."""
    if len(before) != len(after):
        raise ValueError(f"fix_break: before has {len(before)} rows but after has {len(after)}")
    out = {"wrong_to_right": 0, "right_to_wrong": 0, "right_to_right": 0, "wrong_to_wrong": 0, "no_gold": 0}
    for b, a in zip(before, after):
        if b is None or a is None:
            out["no_gold"] += 1
        else:
            out[f"{'right' if b else 'wrong'}_to_{'right' if a else 'wrong'}"] += 1
    return out


# ------------------------------------------------------------------------------------------------
# Aggregation
# ------------------------------------------------------------------------------------------------


def score_rows(rows: Iterable[dict]) -> list[tuple[str, dict[str, float]]]:
    """(source, per-row scores) for every row; scores are {} for rows without gold."""
    return [(r.get("source") or "", score_response(r.get("source") or "", r.get("response") or "",
                                                    r.get("answers") or [], r.get("input") or ""))
            for r in rows]


def has_answer(source: str, answers: Sequence[str]) -> bool | None:
    """SQuAD v2 / QuAC: False when the row's gold is "no answer" (every gold answer normalises to "" or is the
    no-answer phrase), True otherwise; None for any other source or a row without gold."""
    answers = [a for a in (answers or []) if isinstance(a, str)]
    if source not in SPAN_SOURCES or not answers:
        return None
    return _span_golds(answers) != [""]


def chance_level(source: str, rows: Sequence[dict]) -> dict | None:
    """What a system that knows nothing scores on ``rows`` (dicts with ``answers`` and ``input``) of one source,
    under its primary metric: ``{"level": fraction, "rule": words}``, or None when it is not known.

    * yes/no (boolq): always giving the majority gold answer; the level is that answer's share of the rows.
    * multiple choice: guessing, 1/k with k the options parsed from the row's ``input`` (the mean of 1/k over
      the rows that list options; None when none does).
    * SQuAD v2 / QuAC: the better of always abstaining (the share of no-answer rows) and always giving the
      most common gold answer (the share of rows that accept it).
    * open QA (nq_open, trivia_qa): 0.
    """
    rows = [r for r in rows if score_response(source, "", r.get("answers") or [], r.get("input") or "")]
    if not rows:
        return None
    n = len(rows)
    if source in YES_NO_SOURCES:
        counts = collections.Counter((r["answers"][0] or "").strip().lower() for r in rows)
        answer, k = counts.most_common(1)[0]
        return {"level": k / n, "rule": f"majority answer '{answer}' ({k} of {n})"}
    if source in CHOICE_SOURCES:
        ks = [len(parse_options(r.get("input") or "")) for r in rows]
        ks = [k for k in ks if k >= 2]
        if not ks:
            return None
        kinds = sorted(set(ks))
        rule = f"1/k, k = {kinds[0]} options" if len(kinds) == 1 else f"mean 1/k, k = {kinds[0]}-{kinds[-1]} options"
        return {"level": sum(1 / k for k in ks) / len(ks), "rule": rule}
    if source in SPAN_SOURCES:
        abstain = sum(not has_answer(source, r["answers"]) for r in rows)
        normalize = _normalizer(source)
        common = collections.Counter(normalize(_span_golds(r["answers"])[0]) for r in rows
                                     if has_answer(source, r["answers"]))
        if common:
            text, _ = common.most_common(1)[0]
            hits = sum(bool(score_response(source, text, r["answers"])["answer_in_response"]) for r in rows
                       if has_answer(source, r["answers"]))
            if hits > abstain:
                return {"level": hits / n, "rule": f"always answering '{text}' ({hits} of {n})"}
        return {"level": abstain / n, "rule": f"always abstaining ({abstain} of {n} have no answer)"}
    if source in OPEN_SOURCES:
        return {"level": 0.0, "rule": "0 (open answers)"}
    return None


def gold_metrics(rows: Iterable[dict], ci: bool = False, n_boot: int = 2000, seed: int = 0,
                 confidence: float = 0.95, pooled: bool = False) -> dict[str, dict]:
    """Per source: ``{"n": rows scored, metric: mean, ...}`` over rows with ``source, response, answers``
    (and ``input``). Rows without gold are not in ``n`` (see :func:`unscored_counts`). With ``ci`` each
    source also gets ``"ci": {metric: [low, high]}``, a percentile bootstrap interval over rows. With ``pooled``
    (and at least one scored row) ``"_all"`` pools every scored row: ``correct`` is the share right under its
    source's primary metric (as :func:`is_correct`); ``_``-keys are not sources.

    Every source with a known chance level gets ``"chance"`` (:func:`chance_level`); with ``ci`` also
    ``"at_chance"``: True when the lower end of its primary metric's interval is at or below the chance level
    (the data cannot tell the system from one that knows nothing). ``_all`` gets the pooled chance level (the
    per-source levels weighted by rows) when every pooled source has one. SQuAD v2 / QuAC add the official
    script's split: ``HasAns_exact``, ``HasAns_f1``, ``HasAns_total``, ``NoAns_exact``, ``NoAns_f1``,
    ``NoAns_total`` (a part with no rows has only its ``_total``; the CIs cover the parts too)."""

    rows = list(rows)
    per_source: dict[str, list[tuple[dict, dict[str, float]]]] = collections.defaultdict(list)
    right: list[float] = []  # every scored row, in row order: right (1.0) or not under its primary metric
    for row, (source, scores) in zip(rows, score_rows(rows)):
        if scores:
            per_source[source].append((row, scores))
            right.append(float(bool(scores[primary_metric(scores)])))
    out = {}
    for source in sorted(per_source):
        scored = [s for _, s in per_source[source]]
        entry: dict = {"n": len(scored)}
        columns = {m: [s[m] for s in scored] for m in METRICS[source]}
        if source in CONSTRAINT_SOURCES:  # instruction level pools the constraints of all rows, as IFEval does
            for mode in ("strict", "loose"):
                columns[f"inst_{mode}"] = [float(v) for r, _ in per_source[source]
                                           for v in ifeval.verdicts(r.get("response") or "",
                                                                    *ifeval.decode_constraints(r["answers"]),
                                                                    loose=mode == "loose")]
        totals = {}
        if source in SPAN_SOURCES:
            for part, wanted in (("HasAns", True), ("NoAns", False)):
                mine = [s for r, s in per_source[source] if has_answer(source, r.get("answers")) is wanted]
                totals[f"{part}_total"] = len(mine)
                if mine:
                    columns[f"{part}_exact"] = [s["exact_match"] for s in mine]
                    columns[f"{part}_f1"] = [s["f1"] for s in mine]
        for metric, values in columns.items():
            entry[metric] = sum(values) / len(values)
        entry.update(totals)
        if ci:
            entry["ci"] = {m: list(bootstrap_ci(v, n_boot=n_boot, seed=seed, confidence=confidence))
                           for m, v in columns.items()}
        chance = chance_level(source, [r for r, _ in per_source[source]])
        if chance is not None:
            entry["chance"] = chance
            if ci:
                entry["at_chance"] = entry["ci"][primary_metric(scored[0])][0] <= chance["level"]
        out[source] = entry
    if pooled and right:
        out["_all"] = {"n": len(right), "correct": sum(right) / len(right)}
        if ci:
            out["_all"]["ci"] = {"correct": list(bootstrap_ci(right, n_boot=n_boot, seed=seed, confidence=confidence))}
        if all("chance" in out[s] for s in per_source):
            level = sum(out[s]["chance"]["level"] * out[s]["n"] for s in per_source) / len(right)
            out["_all"]["chance"] = {"level": level, "rule": "per-source chance levels weighted by rows"}
            if ci:
                out["_all"]["at_chance"] = out["_all"]["ci"]["correct"][0] <= level
    return out


def unscored_counts(rows: Iterable[dict]) -> dict[str, int]:
    """Rows that got no gold metric, per source (a source without one, or a row with empty ``answers``)."""
    counts: dict[str, int] = collections.Counter()
    for source, scores in score_rows(rows):
        if not scores:
            counts[source] += 1
    return dict(sorted(counts.items()))
