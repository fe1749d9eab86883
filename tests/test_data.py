"""Data layer (paper §4.1): real files in ../shared/data, the project's own fixtures, the demo set, bad input."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import datasets
import pytest

from citing_trl import data as D
from citing_trl.data import COLUMNS, KINDS, NO_ANSWER, DataError

FIXTURES = Path(__file__).parent / "fixtures"


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def check_schema(ds: datasets.Dataset, source: str | None = None):
    assert ds.column_names[: len(COLUMNS)] == COLUMNS
    assert len(set(ds["id"])) == len(ds), "ids must be unique"
    for row in ds:
        assert row["instruction"].strip()
        assert row["output"] in row["answers"] if row["output"] else row["answers"] == []  # alpaca has 1 empty output
        if source:
            assert row["source"] == source and row["id"].startswith(f"{source}-")
    keys = [(r["instruction"], r["input"]) for r in ds]
    assert len(set(keys)) == len(keys)


# ------------------------------------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def alpaca(shared_data):
    return D.load_alpaca(shared_data / "alpaca_4k.json", seed=42)


def test_alpaca_split_8_1_1_disjoint_and_deterministic(alpaca, shared_data):
    assert {k: len(v) for k, v in alpaca.items()} == {"train": 3200, "validation": 400, "test": 400}
    ids = {k: set(v["id"]) for k, v in alpaca.items()}
    assert not (ids["train"] & ids["validation"] or ids["train"] & ids["test"] or ids["validation"] & ids["test"])
    assert len(ids["train"] | ids["validation"] | ids["test"]) == 4000
    check_schema(alpaca["test"], "alpaca")
    again = D.load_alpaca(shared_data / "alpaca_4k.json", seed=42)
    assert again["test"]["id"] == alpaca["test"]["id"] and again["train"]["id"] == alpaca["train"]["id"]
    other = D.load_alpaca(shared_data / "alpaca_4k.json", seed=7)
    assert set(other["test"]["id"]) != ids["test"]
    # the same row keeps its id whichever split it lands in
    raw = json.loads((shared_data / "alpaca_4k.json").read_text())[0]
    row = next(r for split in other.values() for r in split if r["instruction"] == raw["instruction"].strip())
    assert row["id"] in ids["train"] | ids["validation"] | ids["test"] and row["output"] == raw["output"].strip()


def test_load_instructions_alpaca_file_spec(alpaca, shared_data):
    ds = D.load_instructions(f"alpaca:{shared_data / 'alpaca_4k.json'}", split="validation")
    assert ds["id"] == alpaca["validation"]["id"]
    assert len(D.load_instructions(f"alpaca:{shared_data / 'alpaca_4k.json'}", split="test", limit=50)) == 50


def test_nq_open(shared_data):
    ds = D.load_source("nq_open", shared_data / "nq_open_dev.jsonl")
    assert len(ds) == 3610
    check_schema(ds, "nq_open")
    row = ds[0]
    assert "when was the last time anyone was on the moon?" in row["instruction"]
    assert row["input"] == "" and row["answers"] == ["14 December 1972 UTC", "December 1972"]


def test_boolq(shared_data):
    ds = D.load_source("boolq", shared_data / "boolq_dev.jsonl")
    assert len(ds) == 2500
    check_schema(ds, "boolq")
    raw = [json.loads(line) for line in (shared_data / "boolq_dev.jsonl").open()]
    assert Counter(ds["output"]) == {"yes": sum(r["answer"] for r in raw), "no": sum(not r["answer"] for r in raw)}
    assert raw[0]["passage"] in ds[0]["input"] and "yes or no" in ds[0]["instruction"]


def test_commonsense_qa(shared_data):
    ds = D.load_source("commonsense_qa", shared_data / "commonsenseqa_dev.jsonl", limit=100, seed=1)
    assert len(ds) == 100
    check_schema(ds, "commonsense_qa")
    raw = {r["id"]: r for r in map(json.loads, (shared_data / "commonsenseqa_dev.jsonl").open())}
    for row in ds:
        r = raw[row["id"].removeprefix("commonsense_qa-")]
        key = r["answerKey"]
        text = r["choices"]["text"][r["choices"]["label"].index(key)]
        assert row["output"] == f"{key}. {text}" and row["answers"] == [f"{key}. {text}", text]
        labels, texts = r["choices"]["label"], r["choices"]["text"]
        assert row["input"].splitlines() == [f"{lab}. {t}" for lab, t in zip(labels, texts)]
        assert r["question"] in row["instruction"]


def test_squad_v2_nested_with_unanswerable(shared_data):
    ds = D.load_source("squad_v2", shared_data / "squad_v2_dev_sample.json")
    assert len(ds) == 208
    check_schema(ds, "squad_v2")
    unanswerable = [r for r in ds if r["output"] == NO_ANSWER]
    assert len(unanswerable) == 112 and all(r["answers"] == [NO_ANSWER] for r in unanswerable)
    first = ds[0]
    assert first["id"] == "squad_v2-56ddde6b9a695914005b9628" and first["output"] == "France"
    assert "Normandy" in first["input"] and first["output"] in first["input"]
    assert all(a in r["input"] for r in ds if r["output"] != NO_ANSWER for a in r["answers"])


def test_squad_v2_hub_flat_rows_match_nested(shared_data, tmp_path):
    nested = json.loads((shared_data / "squad_v2_dev_sample.json").read_text())
    article = nested["data"][0]
    flat = [{"id": qa["id"], "title": article["title"], "context": p["context"], "question": qa["question"],
             "answers": {"text": [a["text"] for a in qa["answers"]],
                         "answer_start": [a["answer_start"] for a in qa["answers"]]}}
            for p in article["paragraphs"][:3] for qa in p["qas"]]
    from_flat = D.load_source("squad_v2", write_jsonl(tmp_path / "squad_flat.jsonl", flat))
    from_nested = D.load_source("squad_v2", shared_data / "squad_v2_dev_sample.json")
    assert from_flat.to_list() == from_nested.select(range(len(flat))).to_list()


# ------------------------------------------------------------------------------------------------ fixtures


def test_trivia_qa_fixture():
    ds = D.load_source("trivia_qa", FIXTURES / "trivia_qa.jsonl")
    assert len(ds) == 6
    check_schema(ds, "trivia_qa")
    mars = ds[0]
    assert mars["id"] == "trivia_qa-tc_fx_1" and mars["output"] == "Mars"
    assert mars["answers"][0] == "Mars" and "The Red Planet" in mars["answers"]
    assert ds[5]["answers"] == ["7", "seven", "Seven"]


def test_quac_fixture_one_row_per_turn_with_history():
    ds = D.load_source("quac", FIXTURES / "quac.jsonl")
    raw = [json.loads(line) for line in (FIXTURES / "quac.jsonl").open()]
    assert len(ds) == sum(len(r["questions"]) for r in raw) == 9
    check_schema(ds, "quac")
    assert ds["id"][:2] == ["quac-C_fx_hopper_1_q#0", "quac-C_fx_hopper_1_q#1"]
    first, third = ds[0], ds[2]
    assert "CANNOTANSWER" not in first["input"] and "Grace Hopper" in first["input"]
    assert "Conversation so far" not in first["input"]
    assert third["output"] == NO_ANSWER and third["answers"] == [NO_ANSWER]
    # the history of a later turn shows the earlier questions and answers
    assert "Q: What did she do in 1943?" in third["input"] and "Q: Where was she assigned?" in third["input"]
    assert "Q: What did she do in 1943?" not in ds[5]["input"]  # a new dialogue starts without history
    assert ds[0]["answers"] == [raw[0]["orig_answers"]["texts"][0], "joined the United States Navy Reserve."]
    assert sum(r["output"] == NO_ANSWER for r in ds) == 2


def test_piqa_and_openbookqa_fixtures():
    piqa = D.load_source("piqa", FIXTURES / "piqa.jsonl")
    obqa = D.load_source("openbookqa", FIXTURES / "openbookqa.jsonl")
    check_schema(piqa, "piqa")
    check_schema(obqa, "openbookqa")
    assert len(piqa) == len(obqa) == 6
    assert piqa[1]["output"].startswith("B. Remove the stopper") and piqa[1]["input"].startswith("A. Pour")
    assert obqa[0]["output"] == "B. a copper wire" and obqa[0]["id"] == "openbookqa-fx-101"
    assert obqa[0]["input"].splitlines()[0] == "A. a rubber band"


# ------------------------------------------------------------------------------------------------ families


def test_reading_comprehension_family_with_caps(shared_data):
    paths = {"squad_v2": shared_data / "squad_v2_dev_sample.json", "boolq": shared_data / "boolq_dev.jsonl",
             "quac": FIXTURES / "quac.jsonl"}
    ds = D.load_family("reading_comprehension", paths=paths, caps={"squad_v2": 20, "boolq": 30}, seed=3)
    assert Counter(ds["source"]) == {"squad_v2": 20, "boolq": 30, "quac": 9}
    check_schema(ds)
    assert ds.to_list() == D.load_family("reading_comprehension", paths=paths, caps={"squad_v2": 20, "boolq": 30},
                                         seed=3).to_list()
    other = D.load_family("reading_comprehension", paths=paths, caps={"squad_v2": 20, "boolq": 30}, seed=4)
    assert other["id"] != ds["id"]
    assert len(set(ds["source"][:15])) > 1  # shuffled together, not concatenated


def test_commonsense_family_int_cap(shared_data):
    paths = {"piqa": FIXTURES / "piqa.jsonl", "openbookqa": FIXTURES / "openbookqa.jsonl",
             "commonsense_qa": shared_data / "commonsenseqa_dev.jsonl"}
    ds = D.load_family("commonsense", paths=paths, caps=5)
    assert Counter(ds["source"]) == {"piqa": 5, "openbookqa": 5, "commonsense_qa": 5}
    check_schema(ds)


def test_family_fails_naming_the_source_without_file(shared_data, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError(f"no network for {args[0]}")

    monkeypatch.setattr(D.datasets, "load_dataset", offline)
    with pytest.raises(DataError) as err:
        D.load_family("world_knowledge", paths={"nq_open": shared_data / "nq_open_dev.jsonl"})
    message = str(err.value)
    assert "trivia_qa" in message and "mandarjoshi/trivia_qa" in message and "nq_open:" not in message
    with pytest.raises(DataError) as err:  # every source that cannot be read is named, not only the first
        D.load_family("reading_comprehension", paths={"boolq": shared_data / "boolq_dev.jsonl"})
    assert "2 source(s)" in str(err.value) and "squad_v2" in str(err.value) and "allenai/quac" in str(err.value)
    with pytest.raises(DataError, match="not among its sources"):
        D.load_family("world_knowledge", paths={"squad_v2": "x.json"})
    with pytest.raises(DataError, match="unknown family"):
        D.load_family("math")


def test_world_knowledge_family_from_files(shared_data):
    ds = D.load_family("world_knowledge", caps={"nq_open": 10},
                       paths={"nq_open": shared_data / "nq_open_dev.jsonl", "trivia_qa": FIXTURES / "trivia_qa.jsonl"})
    assert Counter(ds["source"]) == {"nq_open": 10, "trivia_qa": 6}


# ------------------------------------------------------------------------------------------------ demo + specs


def test_demo_data():
    ds = D.load_demo()
    assert len(ds) == 80 and ds.column_names == COLUMNS + ["kind"]
    assert Counter(ds["kind"]) == {k: 16 for k in KINDS}
    check_schema(ds, "demo")
    for row in ds:
        assert row["answers"] == [row["output"]] and len(row["output"]) > 20
    assert sum(bool(r["input"]) for r in ds) >= 5
    splits = {s: D.load_instructions("demo", split=s) for s in ("train", "validation", "test")}
    assert [len(splits[s]) for s in splits] == [60, 10, 10]  # 12/2/2 of every kind, fixed
    assert Counter(splits["test"]["kind"]) == {k: 2 for k in KINDS}
    assert sorted(i for s in splits for i in splits[s]["id"]) == sorted(ds["id"])  # disjoint, complete
    assert "demo-factual-16" in splits["test"]["id"] and "demo-factual-01" in splits["train"]["id"]
    sample = D.load_instructions("demo", limit=10, seed=0)
    assert len(sample) == 10 and set(sample["id"]) <= set(splits["train"]["id"])


def test_generic_file_and_specs(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", [
        {"instruction": "Name a prime number.", "output": "7"},
        {"instruction": "Summarize the text.", "input": "Cats sleep a lot."},
        {"id": "x1", "instruction": "Say hi.", "output": "Hi!", "source": "custom"},
    ])
    ds = D.load_instructions(str(path))
    assert ds.column_names == COLUMNS and len(ds) == 3
    assert ds[0]["source"] == "mine" and ds[0]["answers"] == ["7"]
    assert ds[1]["output"] == "" and ds[1]["answers"] == [] and ds[1]["input"] == "Cats sleep a lot."
    assert ds[2]["id"] == "mine-x1" and ds[2]["source"] == "custom"
    assert D.load_instructions(str(path))["id"] == ds["id"]  # stable ids
    listed = tmp_path / "mine.json"
    listed.write_text(json.dumps([{"instruction": "Name a prime number.", "output": "7"}]))
    assert D.load_instructions(str(listed))[0]["id"] == ds[0]["id"]
    nq = D.load_instructions(f"trivia_qa:{FIXTURES / 'trivia_qa.jsonl'}", limit=2)
    assert len(nq) == 2 and set(nq["source"]) == {"trivia_qa"}
    with pytest.raises(DataError, match="unknown data spec"):
        D.load_instructions("no-such-thing")
    with pytest.raises(DataError, match="unknown split"):
        D.load_instructions("demo", split="dev")


# ------------------------------------------------------------------------------------------------ bad input


def test_missing_field_names_file_row_and_field(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "a", "output": "b"},
                                                {"instruction": "c", "output": "d"},
                                                {"input": "no instruction here", "output": "e"}])
    with pytest.raises(DataError) as err:
        D.load_file(path)
    assert str(path) in str(err.value) and "line 3" in str(err.value) and "'instruction'" in str(err.value)
    nq = write_jsonl(tmp_path / "nq.jsonl", [{"question": "who?", "answer": ["me"]}, {"question": "what?"}])
    with pytest.raises(DataError, match=r"nq\.jsonl: line 2: field 'answer' is missing"):
        D.load_source("nq_open", nq)
    tq = write_jsonl(tmp_path / "tq.jsonl", [{"question": "who?", "answer": {"aliases": []}}])
    with pytest.raises(DataError, match=r"line 1: field 'answer.value' is missing"):
        D.load_source("trivia_qa", tq)


def test_wrong_types_and_labels(tmp_path):
    listed = tmp_path / "rows.json"
    listed.write_text(json.dumps([{"instruction": "ok", "output": "x"}, {"instruction": 123, "output": "y"}]))
    with pytest.raises(DataError) as err:
        D.load_file(listed)
    assert str(listed) in str(err.value) and "row 2" in str(err.value) and "must be a string, got int" in str(err.value)
    boolq = write_jsonl(tmp_path / "boolq.jsonl", [{"question": "is it?", "passage": "p", "answer": "yes"}])
    with pytest.raises(DataError, match="field 'answer' must be a boolean"):
        D.load_source("boolq", boolq)
    obqa = write_jsonl(tmp_path / "obqa.jsonl", [{"id": "1", "question_stem": "q", "answerKey": "E",
                                                 "choices": {"text": ["a", "b"], "label": ["A", "B"]}}])
    with pytest.raises(DataError, match="'answerKey' is 'E', not one of the choice labels A, B"):
        D.load_source("openbookqa", obqa)
    piqa = write_jsonl(tmp_path / "piqa.jsonl", [{"goal": "g", "sol1": "a", "sol2": "b", "label": -1}])
    with pytest.raises(DataError, match="field 'label' must be 0 or 1"):
        D.load_source("piqa", piqa)


def test_malformed_and_unreadable_files(tmp_path):
    path = write_jsonl(tmp_path / "broken.jsonl", ['{"instruction": "a", "output": "b"}', '{"instruction": "c", '])
    with pytest.raises(DataError, match=r"broken\.jsonl: line 2: not valid JSON"):
        D.load_file(path)
    whole = tmp_path / "broken.json"
    whole.write_text('[{"instruction": "a"},')
    with pytest.raises(DataError, match=r"broken\.json: not valid JSON \(line 1"):
        D.load_file(whole)
    with pytest.raises(DataError, match=r"missing\.jsonl: cannot read file"):
        D.load_file(tmp_path / "missing.jsonl")
    not_rows = write_jsonl(tmp_path / "scalars.jsonl", ["[1, 2]"])
    with pytest.raises(DataError, match="line 1: expected an object, got list"):
        D.load_file(not_rows)


def test_empty_instructions_and_duplicates_dropped_and_counted(tmp_path, caplog):
    path = write_jsonl(tmp_path / "messy.jsonl", [
        {"instruction": "Add 2 and 2.", "output": "4"},
        {"instruction": "   ", "output": "empty"},
        {"instruction": "Add 2 and 2.", "output": "four"},  # same instruction + input: duplicate
        {"instruction": "Add 2 and 2.", "input": "Use words.", "output": "four"},  # different input: kept
        {"instruction": "", "output": "empty too"},
        {"instruction": "Add 2 and 2.  ", "output": "4"},  # duplicate after whitespace normalisation
    ])
    with caplog.at_level(logging.INFO, logger="citing_trl.data"):
        ds = D.load_file(path)
    assert ds["output"] == ["4", "four"] and ds["input"] == ["", "Use words."]
    message = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "messy.jsonl" in message and "dropped 2 row(s) with an empty instruction and 2 duplicate" in message
    assert "kept 2" in message


# ------------------------------------------------------------------------------------------------ QA mixtures


def _qa_mix(shared_data, caps=("", "", "", "")):
    files = ("boolq:boolq_dev.jsonl", "commonsense_qa:commonsenseqa_dev.jsonl", "nq_open:nq_open_dev.jsonl",
             "squad_v2:squad_v2_dev_sample.json")
    return "+".join(f"{name}:{shared_data / f}{cap}" for (name, f), cap in
                    zip((p.split(":") for p in files), caps))


def test_qa_mixture_splits_are_disjoint_deterministic_and_complete(shared_data):
    spec = _qa_mix(shared_data)
    splits = {s: D.load_instructions(spec, split=s, seed=42) for s in D.SPLITS}
    ids = {s: set(ds["id"]) for s, ds in splits.items()}
    assert not (ids["train"] & ids["validation"] or ids["train"] & ids["test"] or ids["validation"] & ids["test"])
    whole = sum(len(D.load_source(n, shared_data / f)) for n, f in (
        ("boolq", "boolq_dev.jsonl"), ("commonsense_qa", "commonsenseqa_dev.jsonl"), ("nq_open", "nq_open_dev.jsonl"),
        ("squad_v2", "squad_v2_dev_sample.json")))
    assert sum(len(v) for v in ids.values()) == whole  # every row is in exactly one split
    for source in ("boolq", "commonsense_qa", "nq_open", "squad_v2"):
        per = {s: sum(1 for x in splits[s]["source"] if x == source) for s in D.SPLITS}
        n = sum(per.values())
        assert 0.75 * n < per["train"] < 0.85 * n and per["test"] > 0.05 * n, (source, per)  # about 8:1:1
    check_schema(splits["test"])
    again = D.load_instructions(spec, split="test", seed=42)
    assert again["id"] == splits["test"]["id"]  # same seed: same rows in the same order
    other = set(D.load_instructions(spec, split="test", seed=7)["id"])
    assert other != ids["test"] and not (other & set(D.load_instructions(spec, split="train", seed=7)["id"]))
    # a single source file given alone is split by the same rule
    boolq = D.load_instructions(f"boolq:{shared_data / 'boolq_dev.jsonl'}", split="test")
    assert set(boolq["id"]) == {i for i in ids["test"] if i.startswith("boolq-")}


def test_qa_mixture_caps_and_limit(shared_data):
    spec = _qa_mix(shared_data, ("@40", "@30", "@20", "@10"))
    train = D.load_instructions(spec, split="train", seed=3)
    assert Counter(train["source"]) == {"boolq": 40, "commonsense_qa": 30, "nq_open": 20, "squad_v2": 10}
    test = D.load_instructions(spec, split="test", seed=3)
    assert not set(train["id"]) & set(test["id"])
    uncapped_test = set(D.load_instructions(_qa_mix(shared_data), split="test", seed=3)["id"])
    assert set(test["id"]) <= uncapped_test  # a cap samples inside the split, never across it
    assert len(D.load_instructions(spec, split="train", seed=3, limit=25)) == 25
    with pytest.raises(DataError, match="cap"):
        D.load_instructions(f"boolq:{shared_data / 'boolq_dev.jsonl'}@ten+nq_open", split="train")
    with pytest.raises(DataError, match="unknown data spec"):
        D.load_instructions(f"boolq:{shared_data / 'boolq_dev.jsonl'}+nosuch", split="train")
