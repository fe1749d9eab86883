"""IFEval's constraint checks, worked by hand (every type, followed and not, strict and loose), the ``ifeval``
data source (format, splits by instruction, stratified test split), and the checker as the source's gold metric."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from citing_trl.data import load_instructions
from citing_trl.data.ifeval import CONFLICTS, describe, draw_constraints, instruction_rows, split_rows
from citing_trl.errors import DataError
from citing_trl.evaluation import ifeval
from citing_trl.evaluation.gold import gold_metrics, is_correct, score_response

ALPACA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alpaca_4k.json"
needs_alpaca = pytest.mark.skipif(not ALPACA.is_file(), reason="../shared/data/alpaca_4k.json is absent")

# (id, kwargs, a response that follows it, a response that does not), worked by hand from IFEval's rules
CASES = [
    ("keywords:existence", {"keywords": ["river", "bridge"]},
     "The BRIDGE crosses the river.", "The bridge crosses the stream."),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"},
     "A cat met another Cat.", "A cat met a dog."),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "less than"},
     "One cat.", "cat, cat."),
    ("keywords:forbidden_words", {"forbidden_words": ["red", "blue"]},
     "It is reddish and bluer.", "It is Red."),  # whole words only: "reddish" is allowed
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "at least"},
     "Zigzag zoo.", "Zigzag."),  # z,z,z,z vs z,z,... "Zigzag" has 2
    ("keywords:letter_frequency", {"letter": "a", "let_frequency": 2, "let_relation": "less than"},
     "One cat.", "A cat."),
    ("language:response_language", {"language": "de"},
     "Das ist eine sehr gute Frage, und ich beantworte sie gerne ausführlich auf Deutsch.",
     "This is a very good question and I will gladly answer it in English."),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"},
     "One. Two. Three.", "One. Dr. Two goes home."),  # "Dr." does not end a sentence: 2 sentences
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "less than"},
     "Only one here.", "One. Two."),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2},
     "First part.\n***\nSecond part.", "First.\n***\n\n***\nSecond."),  # an empty paragraph in between fails
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"},
     "I don't know.", "one two three four five"),  # don't = 2 words: 4 in all
    ("length_constraints:number_words", {"num_words": 3, "relation": "at least"},
     "e.g. fine", "just two"),  # e, g, fine
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "river"},
     "Hello there.\n\n\"River, wide and slow.", "Hello there.\n\nThe river.\n\nThird."),
    ("detectable_content:number_placeholders", {"num_placeholders": 2},
     "Dear [name], at [address].", "Dear [name], at {address}."),
    ("detectable_content:postscript", {"postscript_marker": "P.S."},
     "Body.\np. s. see you", "Body.\nPS see you"),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"},
     "Body.\nP.P.S extra", "Body.\nP.S. extra"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2},
     "* one\n- two\n**not a bullet**", "* one\n* two\n* three"),
    ("detectable_format:constrained_response", {},
     "Well. My answer is maybe.", "My answer is perhaps."),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2},
     "*one* and **two**", "*one* and * *"),  # a blank highlight does not count
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\nA\nSection 2\nB", "Section 1\nA\nSection two\nB"),
    ("detectable_format:json_format", {},
     '```json\n{"a": 1}\n```', "{a: 1}"),
    ("detectable_format:title", {},
     "<<A Title>>\nText.", "<< >>\nText."),
    ("combination:two_responses", {},
     "First answer.\n******\nSecond answer.", "Same.\n******\nSame."),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Name a color."},
     "name a COLOR. Blue.", "Sure. Name a color. Blue."),
    ("startend:end_checker", {"end_phrase": "Any other questions?"},
     'Done. any other questions?"  ', "Any other questions? Yes."),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "THIS is VERY good.", "THIS is Very good."),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"},
     "THIS is good.", "NASA and ESA."),
    ("change_case:english_capital", {},
     "THIS IS AN ANSWER WRITTEN IN CAPITAL LETTERS ONLY.", "THIS IS ALMOST ALL CAPITALS, except here."),
    ("change_case:english_lowercase", {},
     "this is an answer written in lowercase letters only.", "this is almost all lowercase, Except here."),
    ("punctuation:no_comma", {},
     "No commas here.", "One, two."),
    ("startend:quotation", {},
     ' "Quoted answer." ', '"Unclosed answer.'),
]


def test_every_type_has_hand_worked_cases():
    assert {c[0] for c in CASES} == set(ifeval.INSTRUCTION_IDS) and len(ifeval.INSTRUCTION_IDS) == 25


@pytest.mark.parametrize("iid,kwargs,good,bad", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_strict_check_by_hand(iid, kwargs, good, bad):
    assert ifeval.follows(iid, good, kwargs) is True
    assert ifeval.follows(iid, bad, kwargs) is False


@pytest.mark.parametrize("iid,kwargs,good,bad", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_loose_keeps_strict_passes(iid, kwargs, good, bad):
    assert ifeval.verdicts(good, [iid], [kwargs], loose=True) == [True]


# (id, kwargs, response): fails strict, follows loose, and why
LOOSE_ONLY = [
    ("startend:quotation", {}, 'Here you go:\n"Quoted answer."'),  # first line removed
    ("startend:end_checker", {"end_phrase": "Bye."}, "Text. Bye.\nHope this helps!"),  # last line removed
    ("combination:repeat_prompt", {"prompt_to_repeat": "Name a color."}, "Sure!\nName a color. Blue.\n**"),  # both
    ("change_case:english_lowercase", {}, "**Note**\nthis is all in lowercase english letters here."),
    ("detectable_format:json_format", {}, 'Sure:\n{"a": 1}'),
    ("detectable_format:number_bullet_lists", {"num_bullets": 1}, "* one\n* two"),  # last line removed
    ("punctuation:no_comma", {}, "Well, here:\nno commas at all"),
]


@pytest.mark.parametrize("iid,kwargs,response", LOOSE_ONLY, ids=[c[0] for c in LOOSE_ONLY])
def test_loose_retries_without_first_last_lines_and_stars(iid, kwargs, response):
    loose = ifeval.verdicts(response, [iid], [kwargs], loose=True)
    assert loose == [True]
    assert ifeval.verdicts(response, [iid], [kwargs]) == [False]


def test_loose_variants_are_ifeval_eight():
    variants = ifeval.loose_variants("a*\nb*\nc*")
    assert variants == ["a*\nb*\nc*", "a\nb\nc", "b*\nc*", "a*\nb*", "b*", "b\nc", "a\nb", "b"]


def test_blank_response_follows_nothing_and_bad_ids_are_refused():
    assert ifeval.follows("punctuation:no_comma", "   ") is False
    with pytest.raises(ValueError):
        ifeval.follows("punctuation:no_semicolon", "x")


def test_prompt_and_instruction_level_accuracy():
    rows = [{"response": "there are no commas anywhere in this short english sentence", "instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase"],
             "kwargs": [{}, {}]},
            {"response": "Yes, indeed.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}]
    acc = ifeval.accuracy(rows)
    assert acc["n"] == 2 and acc["n_instructions"] == 3
    assert acc["prompt_strict"] == 0.5 and acc["inst_strict"] == pytest.approx(2 / 3)
    assert acc["per_type"]["punctuation:no_comma"] == {"n": 2, "strict": 0.5, "loose": 0.5}


# ------------------------------------------------------------------------------------------------ gold metric


def _row(ids, kwargs, response):
    return {"source": "ifeval", "response": response, "input": "",
            "answers": [ifeval.encode_constraints(ids, kwargs)]}


def test_gold_metric_scores_ifeval_rows_with_the_checker():
    ids, kw = ["punctuation:no_comma", "keywords:existence"], [{}, {"keywords": ["river"]}]
    answers = [ifeval.encode_constraints(ids, kw)]
    assert score_response("ifeval", "The river runs.", answers) == {
        "prompt_strict": 1.0, "prompt_loose": 1.0, "inst_strict": 1.0, "inst_loose": 1.0}
    assert is_correct("ifeval", "The river, it runs.", answers) is False
    assert is_correct("ifeval", "The river runs.", answers) is True
    rows = [_row(ids, kw, "The river runs."), _row(ids, kw, "A lake, calm."), _row(ids[:1], kw[:1], "Fine.")]
    m = gold_metrics(rows, ci=True, n_boot=200)["ifeval"]
    assert m["n"] == 3 and m["prompt_strict"] == pytest.approx(2 / 3)
    assert m["inst_strict"] == pytest.approx(3 / 5)  # pooled over the 5 constraints, not a mean of row shares


# ------------------------------------------------------------------------------------------------ data source


def test_drawn_constraints_never_conflict():
    import random

    rng = random.Random(0)
    for _ in range(2000):
        ids, kwargs = draw_constraints(rng)
        assert 1 <= len(ids) <= 3 and len(kwargs) == len(ids)
        for i, a in enumerate(ids):
            assert not any(b in CONFLICTS[a] for b in ids[i + 1:]), ids
    assert "punctuation:no_comma" not in CONFLICTS["combination:two_responses"]
    assert "startend:quotation" in CONFLICTS["detectable_format:title"]  # made symmetric from IFEval's one-sided entry
    assert all(a in CONFLICTS[b] for a in CONFLICTS for b in CONFLICTS[a])


def test_rows_have_ifeval_format_and_are_seeded():
    texts = [f"Describe thing {i}." for i in range(100)] + ["Describe thing 3."]
    rows = instruction_rows(texts, seed=7)
    assert len(rows) == 100 and rows == instruction_rows(texts, seed=7) and rows != instruction_rows(texts, seed=8)
    for row in rows:
        assert set(row) == {"key", "prompt", "instruction_id_list", "kwargs"}
        assert len(row["kwargs"]) == len(row["instruction_id_list"])
        assert all(describe(i, k) in row["prompt"] for i, k in zip(row["instruction_id_list"], row["kwargs"]))
    assert collections.Counter(r["instruction_id_list"][0] for r in rows).most_common(1)[0][1] == 4  # 100/25


def test_splits_share_no_instruction_and_test_is_stratified():
    rows = instruction_rows([f"Task {i}." for i in range(500)], seed=1)
    parts = {s: split_rows(rows, s, seed=1) for s in ("train", "validation", "test")}
    keys = {s: {r["key"] for r in p} for s, p in parts.items()}
    assert sum(map(len, keys.values())) == 500
    assert not (keys["train"] & keys["test"] or keys["train"] & keys["validation"] or keys["validation"] & keys["test"])
    assert collections.Counter(r["instruction_id_list"][0] for r in parts["test"]) == {i: 2 for i in ifeval.INSTRUCTION_IDS}


@needs_alpaca
def test_ifeval_spec_from_alpaca_file():
    spec = f"ifeval:{ALPACA}"
    test, train = load_instructions(spec, split="test"), load_instructions(spec, split="train")
    assert len(test) >= 300 and test[0]["source"] == "ifeval"
    first_lines = lambda ds: {r["instruction"].split("\n\n")[0] for r in ds}  # noqa: E731
    assert not first_lines(test) & first_lines(train)
    ids, _ = ifeval.decode_constraints(test[0]["answers"])
    assert all(i in ifeval.INSTRUCTION_IDS for i in ids)


def test_ifeval_spec_from_a_file_of_ifeval_rows(tmp_path):
    rows = [{"key": 1000 + i, "prompt": f"Write a line {i} without commas.", "instruction_id_list": ["punctuation:no_comma"],
             "kwargs": [{"num_words": None}]} for i in range(40)]
    path = tmp_path / "ifeval_input_data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    got = load_instructions(f"ifeval:{path}%50", split="test")
    assert len(got) == 20 and got[0]["id"].startswith("ifeval-10")
    assert is_correct("ifeval", "no commas", got[0]["answers"]) is True
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"key": 1, "prompt": "x", "instruction_id_list": ["nope:x"], "kwargs": [{}]}))
    with pytest.raises(DataError, match="unknown instruction id"):
        load_instructions(f"ifeval:{bad}", split="train")


def test_evaluation_report_has_the_four_numbers_and_a_constraint_type_table():
    from citing_trl.evaluation.reports import constraint_type_report, gold_markdown, gold_report

    ids, kw = ["punctuation:no_comma", "startend:quotation"], [{}, {}]
    a = [dict(_row(ids, kw, '"No commas."'), id="r1"), dict(_row(ids, kw, "Yes, sure."), id="r2")]
    b = [dict(_row(ids, kw, "No commas."), id="r1"), dict(_row(ids, kw, "Yes, sure."), id="r2")]
    systems = {"sft": b, "citing": a}
    gold = gold_report(systems, n_boot=100)
    gold["_constraint_types"] = constraint_type_report(systems)
    assert gold["citing"]["ifeval"]["prompt_strict"] == 0.5 and gold["sft"]["ifeval"]["inst_strict"] == 0.25
    assert gold["_constraint_types"]["sft"]["startend:quotation"] == {"n": 2, "strict": 0.0, "loose": 0.0}
    text = gold_markdown(gold)
    assert "| startend:quotation | 2 | 0.0 | 0.0 | 50.0 | 50.0 |" in text
    assert "| citing | ifeval | 2 | inst_loose | 50.0 |" in text
