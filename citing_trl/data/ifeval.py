"""The ``ifeval`` source: instructions with verifiable constraints, in IFEval's own row format.

A row is ``{"key", "prompt", "instruction_id_list", "kwargs"}`` as on the Hub (``google/IFEval``): the prompt
states its constraints in words, the ids (IFEval's taxonomy, :data:`citing_trl.evaluation.ifeval.INSTRUCTION_IDS`)
name them and ``kwargs`` (aligned with the ids) holds their arguments. In the project's schema the constraints ride
in ``answers`` (one JSON entry, :func:`~citing_trl.evaluation.ifeval.encode_constraints`), so answers files keep
them and the gold metric (:mod:`citing_trl.evaluation.gold`) scores a response with the checkers.

Rows come from three places, through one spec name:

* ``ifeval`` alone: the real IFEval prompts from the Hub (541 rows, one Hub split; every logical split reads it,
  so it is for evaluation only);
* ``ifeval:FILE`` where FILE holds IFEval rows (a downloaded copy of IFEval, or rows written by
  :func:`write_rows`);
* ``ifeval:FILE`` where FILE holds Alpaca rows ``{instruction, input, output}``: each distinct instruction gets 1-3
  constraints (:func:`constrained_rows`, seeded; pairs IFEval marks as incompatible are never drawn together).

A file is split by instruction, never by row: one instruction gives one row, and the rows are dealt to
train/validation/test per *first* constraint type, so the test split holds every type in proportion
(:func:`split_rows`). The constraint texts are this project's own wording; the checks are IFEval's.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from citing_trl.errors import DataError
from citing_trl.evaluation.ifeval import ANSWER_OPTIONS, INSTRUCTION_IDS, decode_constraints, encode_constraints

HUB_ID = "google/IFEval"

# ------------------------------------------------------------------------------------------------
# Which constraints may share a prompt (IFEval's conflict table, made symmetric)
# ------------------------------------------------------------------------------------------------

_ALL = set(INSTRUCTION_IDS)
_ONE_SIDED: dict[str, set[str]] = {
    "language:response_language": {"detectable_format:multiple_sections", "keywords:existence", "keywords:frequency",
                                   "keywords:forbidden_words", "startend:end_checker",
                                   "change_case:english_capital", "change_case:english_lowercase"},
    "length_constraints:number_paragraphs": {"length_constraints:nth_paragraph_first_word",
                                             "length_constraints:number_sentences"},
    "detectable_format:constrained_response": _ALL,
    "detectable_format:multiple_sections": {"language:response_language",
                                            "detectable_format:number_highlighted_sections"},
    "detectable_format:json_format": _ALL - {"keywords:forbidden_words", "keywords:existence"},
    "combination:two_responses": _ALL - {"keywords:forbidden_words", "keywords:existence",
                                         "language:response_language", "detectable_format:title",
                                         "punctuation:no_comma"},
    "combination:repeat_prompt": _ALL - {"keywords:existence", "detectable_format:title", "punctuation:no_comma"},
    "change_case:capital_word_frequency": {"change_case:english_lowercase", "change_case:english_capital"},
    "change_case:english_lowercase": {"change_case:english_capital"},
    "startend:quotation": {"detectable_format:title"},
}


def _conflicts() -> dict[str, frozenset[str]]:
    table = {i: {i} for i in INSTRUCTION_IDS}  # a type never appears twice in one prompt
    for a, others in _ONE_SIDED.items():
        for b in others:
            table[a].add(b)
            table[b].add(a)
    return {i: frozenset(s) for i, s in table.items()}


CONFLICTS = _conflicts()

# ------------------------------------------------------------------------------------------------
# Arguments and the words that state each constraint
# ------------------------------------------------------------------------------------------------

LANGUAGES = {"en": "English", "es": "Spanish", "pt": "Portuguese", "fr": "French", "de": "German",
             "it": "Italian", "ru": "Russian", "ja": "Japanese", "ko": "Korean", "hi": "Hindi", "ar": "Arabic",
             "pl": "Polish", "fi": "Finnish", "vi": "Vietnamese", "sw": "Swahili", "bg": "Bulgarian"}
KEYWORDS = ("energy", "window", "harvest", "balance", "journey", "signal", "garden", "market", "memory", "bridge",
            "pattern", "season", "engine", "island", "method", "circle", "future", "silver", "network", "practice",
            "morning", "planet", "library", "river", "budget", "custom", "habit", "shadow", "ticket", "valley")
ENDINGS = ("Is there anything else I can help with?", "Let me know if you have more questions.",
           "That is all for now.")
RELATIONS = ("less than", "at least")


def _args(iid: str, rng: random.Random, instruction: str) -> dict:
    """Seeded arguments for one constraint (ranges sized for short answers; IFEval's own are wider)."""
    rel = rng.choice(RELATIONS)
    if iid == "keywords:existence":
        return {"keywords": sorted(rng.sample(KEYWORDS, 2))}
    if iid == "keywords:frequency":
        return {"keyword": rng.choice(KEYWORDS), "frequency": rng.randint(1, 3), "relation": rel}
    if iid == "keywords:forbidden_words":
        return {"forbidden_words": sorted(rng.sample(KEYWORDS, 2))}
    if iid == "keywords:letter_frequency":
        return {"letter": rng.choice("abcdefghijklmnopqrstuvwxyz"), "let_frequency": rng.randint(1, 10),
                "let_relation": rel}
    if iid == "language:response_language":
        return {"language": rng.choice(sorted(LANGUAGES))}
    if iid == "length_constraints:number_sentences":
        return {"num_sentences": rng.randint(1, 10), "relation": rel}
    if iid == "length_constraints:number_paragraphs":
        return {"num_paragraphs": rng.randint(2, 5)}
    if iid == "length_constraints:number_words":
        return {"num_words": rng.choice((20, 30, 50, 80, 100, 150, 200)), "relation": rel}
    if iid == "length_constraints:nth_paragraph_first_word":
        n = rng.randint(2, 5)
        return {"num_paragraphs": n, "nth_paragraph": rng.randint(1, n), "first_word": rng.choice(KEYWORDS)}
    if iid == "detectable_content:number_placeholders":
        return {"num_placeholders": rng.randint(1, 4)}
    if iid == "detectable_content:postscript":
        return {"postscript_marker": rng.choice(("P.S.", "P.P.S"))}
    if iid == "detectable_format:number_bullet_lists":
        return {"num_bullets": rng.randint(2, 5)}
    if iid == "detectable_format:number_highlighted_sections":
        return {"num_highlights": rng.randint(1, 4)}
    if iid == "detectable_format:multiple_sections":
        return {"section_spliter": rng.choice(("Section", "SECTION")), "num_sections": rng.randint(2, 5)}
    if iid == "combination:repeat_prompt":
        return {"prompt_to_repeat": instruction}
    if iid == "startend:end_checker":
        return {"end_phrase": rng.choice(ENDINGS)}
    if iid == "change_case:capital_word_frequency":
        return {"capital_frequency": rng.randint(1, 20), "capital_relation": rel}
    return {}  # the types without arguments


def describe(iid: str, a: dict) -> str:
    """The sentence that states one constraint in a prompt (this project's wording)."""
    return {
        "keywords:existence": lambda: f"Use the words {' and '.join(repr(k) for k in a['keywords'])} somewhere in "
                                      "your answer.",
        "keywords:frequency": lambda: f"The word {a['keyword']!r} must appear {a['relation']} {a['frequency']} "
                                      f"time{'s' if a['frequency'] != 1 else ''}.",
        "keywords:forbidden_words": lambda: "Do not use the words " + " or ".join(repr(w) for w in a["forbidden_words"])
                                            + " anywhere.",
        "keywords:letter_frequency": lambda: f"The letter {a['letter']!r} must occur {a['let_relation']} "
                                             f"{a['let_frequency']} times in your answer.",
        "language:response_language": lambda: f"Write your whole answer in {LANGUAGES.get(a['language'], a['language'])} "
                                              "and in no other language.",
        "length_constraints:number_sentences": lambda: f"Your answer must have {a['relation']} {a['num_sentences']} "
                                                       "sentences.",
        "length_constraints:number_paragraphs": lambda: f"Write exactly {a['num_paragraphs']} paragraphs and put the "
                                                        "line *** between one paragraph and the next.",
        "length_constraints:number_words": lambda: f"Use {a['relation']} {a['num_words']} words.",
        "length_constraints:nth_paragraph_first_word": lambda: (
            f"Write exactly {a['num_paragraphs']} paragraphs separated by a blank line; paragraph number "
            f"{a['nth_paragraph']} must begin with the word {a['first_word']!r}."),
        "detectable_content:number_placeholders": lambda: f"Include at least {a['num_placeholders']} placeholder"
                                                          f"{'s' if a['num_placeholders'] != 1 else ''} in square "
                                                          "brackets, such as [name].",
        "detectable_content:postscript": lambda: f"Finish with a postscript that starts with {a['postscript_marker']}",
        "detectable_format:number_bullet_lists": lambda: f"Give exactly {a['num_bullets']} bullet points written as "
                                                         "markdown list items, like:\n* first point\n* second point",
        "detectable_format:constrained_response": lambda: "Reply with one of these exact phrases: "
                                                          + ", ".join(f'"{o}"' for o in ANSWER_OPTIONS),
        "detectable_format:number_highlighted_sections": lambda: f"Highlight at least {a['num_highlights']} part"
                                                                 f"{'s' if a['num_highlights'] != 1 else ''} with "
                                                                 "markdown, as in *highlighted part*.",
        "detectable_format:multiple_sections": lambda: f"Split your answer into {a['num_sections']} sections and "
                                                       f"begin each with '{a['section_spliter']} X', where X is "
                                                       "its number.",
        "detectable_format:json_format": lambda: "Give the entire output as JSON; you may wrap it in a ``` code "
                                                 "block.",
        "detectable_format:title": lambda: "Give your answer a title wrapped in double angle brackets, like "
                                           "<<my title>>.",
        "combination:two_responses": lambda: "Give two different answers, separated by a line of six asterisks "
                                             "(******) and nothing else.",
        "combination:repeat_prompt": lambda: "Before answering, copy the request above word for word (leave out "
                                             "this paragraph of rules), then write your answer.",
        "startend:end_checker": lambda: f"End your answer with the exact words {a['end_phrase']!r} and nothing "
                                        "after them.",
        "change_case:capital_word_frequency": lambda: f"Use {a['capital_relation']} {a['capital_frequency']} words "
                                                      "written entirely in capital letters.",
        "change_case:english_capital": lambda: "Write the whole answer in English, in capital letters only.",
        "change_case:english_lowercase": lambda: "Write the whole answer in English, in lowercase letters only; no "
                                                 "capital letter anywhere.",
        "punctuation:no_comma": lambda: "Do not use any commas.",
        "startend:quotation": lambda: "Put double quotation marks around your whole answer.",
    }[iid]()


def draw_constraints(rng: random.Random, first: str | None = None, instruction: str = "") -> tuple[list[str], list[dict]]:
    """1-3 mutually compatible constraints (``first`` leads when given) and their arguments."""
    ids = [first or rng.choice(INSTRUCTION_IDS)]
    for _ in range(rng.choice((0, 1, 1, 2)) if len(ids) else 0):
        free = [i for i in INSTRUCTION_IDS if not any(i in CONFLICTS[j] for j in ids)]
        if not free:
            break
        ids.append(rng.choice(free))
    return ids, [_args(i, rng, instruction) for i in ids]


def _key(instruction: str) -> int:
    return int(hashlib.sha1(instruction.encode()).hexdigest()[:12], 16)


def instruction_rows(instructions: Sequence[str], seed: int = 42, outputs: Sequence[str] | None = None) -> list[dict]:
    """IFEval rows for distinct instructions (duplicates and blanks dropped): in a seeded order, row i leads with
    constraint type i mod 25, so every type leads equally often; 0-2 more are drawn among the compatible ones.
    ``outputs`` (e.g. Alpaca's answers, which ignore the constraints) ride along as ``output`` (not IFEval's)."""
    reference = {}
    for text, out in zip(instructions, outputs or []):
        reference.setdefault((text or "").strip(), out)
    unique = list(dict.fromkeys(s.strip() for s in instructions if s and s.strip()))
    rng = random.Random(seed)
    rng.shuffle(unique)
    rows = []
    for i, instruction in enumerate(unique):
        ids, kwargs = draw_constraints(rng, INSTRUCTION_IDS[i % len(INSTRUCTION_IDS)], instruction)
        rules = " ".join(describe(iid, kw) for iid, kw in zip(ids, kwargs))
        rows.append({"key": _key(instruction), "prompt": f"{instruction}\n\n{rules}",
                     "instruction_id_list": ids, "kwargs": kwargs,
                     **({"output": reference[instruction]} if instruction in reference else {})})
    return rows


def split_rows(rows: list[dict], split: str, seed: int, test_percent: int = 10) -> list[dict]:
    """The rows of ``split``: per leading constraint type, a seeded shuffle deals ``test_percent`` % to test, 10 %
    to validation and the rest to train (round half up, at least one test row per type with 3 or more rows), so
    the test split is stratified by type and no row (hence no instruction) is in two splits."""
    by_type: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: str(r["key"])):
        by_type.setdefault(row["instruction_id_list"][0], []).append(row)
    out = []
    for iid in sorted(by_type):
        mine = by_type[iid]
        random.Random(f"{seed}:{iid}").shuffle(mine)
        n_test = max(int(len(mine) * test_percent / 100 + 0.5), 1 if len(mine) >= 3 else 0)
        n_val = int(len(mine) * 0.1 + 0.5)
        cut = {"test": mine[:n_test], "validation": mine[n_test:n_test + n_val], "train": mine[n_test + n_val:]}
        out += cut[split]
    return out


def to_instruction_row(row: dict, where: str = "") -> dict:
    """One IFEval row in the project's schema: the prompt is the instruction, the constraints ride in ``answers``."""
    for field in ("prompt", "instruction_id_list", "kwargs"):
        if field not in row:
            raise DataError(f"ifeval{(' ' + where) if where else ''}: row lacks {field!r} (IFEval rows have key, "
                            "prompt, instruction_id_list, kwargs)")
    ids, kwargs = list(row["instruction_id_list"]), list(row["kwargs"])
    if len(ids) != len(kwargs) or not ids:
        raise DataError(f"ifeval{(' ' + where) if where else ''}: instruction_id_list has {len(ids)} ids but kwargs "
                        f"has {len(kwargs)} entries")
    unknown = [i for i in ids if i not in INSTRUCTION_IDS]
    if unknown:
        raise DataError(f"ifeval{(' ' + where) if where else ''}: unknown instruction id(s) {unknown}")
    kwargs = [{k: v for k, v in (kw or {}).items() if v is not None} for kw in kwargs]
    output = row.get("output") if isinstance(row.get("output"), str) else ""
    return {"id": str(row.get("key", "")), "instruction": row["prompt"], "input": "", "output": output,
            "answers": [encode_constraints(ids, kwargs)]}


def is_alpaca_row(row: dict) -> bool:
    return isinstance(row, dict) and "instruction" in row and "prompt" not in row


def file_rows(raw: list[dict], seed: int) -> list[dict]:
    """IFEval rows from a file's raw rows: kept as they are, or built from Alpaca rows (instruction + input)."""
    if raw and all(is_alpaca_row(r) for r in raw):
        texts = [f"{r['instruction'].strip()}\n\n{r['input'].strip()}" if (r.get("input") or "").strip()
                 else r["instruction"] for r in raw]
        return instruction_rows(texts, seed, outputs=[r.get("output") or "" for r in raw])
    return raw


def constraint_criteria(answers: Sequence[str]) -> str:
    """The constraints of an ``ifeval`` row (from its ``answers``) as rubric criteria, in the words
    :func:`describe` puts in generated prompts ("" for a row without constraints). The rubric's matched criteria
    stay beside them (:func:`citing_trl.rubric.assign_criteria`)."""
    spec = decode_constraints(answers or [])
    if not spec or not spec[0]:
        return ""
    return "The answer must follow every constraint of the instruction:\n" + "\n".join(
        f"- {describe(i, k)}" for i, k in zip(*spec))
