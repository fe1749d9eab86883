"""The shape of the ``citing_trl.data`` package: its public names, its registry and its split helpers."""

from __future__ import annotations

import fnmatch
import importlib
import json
from importlib import resources
from pathlib import Path

import pytest

import citing_trl.data as D
from citing_trl.data import sources, splits

REPO = Path(__file__).resolve().parents[1]

# every name `from citing_trl.data import X` served when it was one module (data.py), with the room it lives in now
PUBLIC = {
    "COLUMNS": "schema", "FEATURES": "schema", "KINDS": "schema", "NO_ANSWER": "schema",
    "FAMILIES": "sources", "SOURCES": "sources", "Source": "sources",
    "DEMO_HELD_OUT": "splits", "FILE_SPLIT": "splits", "SPLITS": "splits", "file_split_of": "splits",
    "DEMO_FILE": "loaders", "load_alpaca": "loaders", "load_demo": "loaders", "load_family": "loaders",
    "load_file": "loaders", "load_source": "loaders",
    "load_instructions": "spec", "local_files_in_spec": "spec",
}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_names_reexported_from_their_room(name):
    room = importlib.import_module(f"citing_trl.data.{PUBLIC[name]}")
    assert getattr(D, name) is getattr(room, name)
    assert name in D.__all__


def test_all_is_exactly_the_public_names():
    assert sorted(D.__all__) == sorted([*PUBLIC, "DataError"])
    from citing_trl.errors import DataError, UserError

    assert D.DataError is DataError and issubclass(DataError, UserError) and issubclass(DataError, ValueError)


def test_every_family_member_is_a_registered_source():
    for family, members in sources.FAMILIES.items():
        assert members, family
        for name in members:
            assert name in sources.SOURCES, (family, name)
            assert callable(sources.SOURCES[name].convert)


def test_shuffle_split_is_8_1_1_disjoint_and_seeded():
    rows = [{"id": str(i)} for i in range(95)]
    parts = splits.shuffle_split(rows, seed=3)
    assert [len(parts[s]) for s in splits.SPLITS] == [75, 10, 10]
    ids = [r["id"] for s in splits.SPLITS for r in parts[s]]
    assert sorted(ids) == sorted(r["id"] for r in rows)
    assert parts == splits.shuffle_split(rows, seed=3) and parts != splits.shuffle_split(rows, seed=4)


def test_split_file_rows_partitions_by_id_hash():
    rows = [{"id": f"boolq-{i}"} for i in range(400)]
    got = {s: splits.split_file_rows(rows, s, seed=42) for s in splits.SPLITS}
    assert sum(len(v) for v in got.values()) == len(rows)
    assert all(r in got[splits.file_split_of(r["id"], 42)] for r in rows)
    assert 280 <= len(got["train"]) <= 360 and got["validation"] and got["test"]
    # order does not matter: a row's split depends on its id only
    assert splits.split_file_rows(rows[::-1], "test", seed=42) == got["test"][::-1]


def test_sample_rows_caps_with_a_seed():
    rows = list(range(20))
    assert splits.sample_rows(rows, None, 1) is rows and splits.sample_rows(rows, 50, 1) is rows
    assert splits.sample_rows(rows, 5, 1) == splits.sample_rows(rows, 5, 1) and len(splits.sample_rows(rows, 5, 1)) == 5
    with pytest.raises(D.DataError, match="limit must be >= 0"):
        splits.sample_rows(rows, -1, 1)


def test_demo_file_is_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    assert resources.files("citing_trl").joinpath(D.DEMO_FILE).is_file()
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["citing_trl"]
    assert any(fnmatch.fnmatch(D.DEMO_FILE, p) for p in patterns), patterns


def test_test_percent_holds_out_more_and_never_moves_test_rows_into_training():
    rows = [{"id": f"squad_v2-{i}"} for i in range(600)]
    default = {s: {r["id"] for r in splits.split_file_rows(rows, s, seed=42)} for s in splits.SPLITS}
    wide = {s: {r["id"] for r in splits.split_file_rows(rows, s, seed=42, test_percent=50)} for s in splits.SPLITS}
    assert splits.file_cuts(10) == splits.FILE_SPLIT
    assert set().union(*wide.values()) == {r["id"] for r in rows}
    assert not (wide["train"] & wide["test"]) and not (wide["validation"] & wide["test"])
    assert default["test"] <= wide["test"] and wide["train"] <= default["train"]
    assert 240 <= len(wide["test"]) <= 360 and 180 <= len(wide["train"]) <= 300
    for bad in (5, 90, 12.5):
        with pytest.raises(D.DataError, match="must be a whole percent from 10 to 80"):
            splits.file_cuts(bad)


def test_spec_percent_suffix_on_a_file_part(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "passage": "p", "answer": i % 2 == 0}) + "\n"
                            for i in range(300)))
    spec = f"boolq:{path}%40"
    test, train = D.load_instructions(spec, split="test"), D.load_instructions(spec, split="train")
    plain = D.load_instructions(f"boolq:{path}", split="test")
    assert set(plain["id"]) <= set(test["id"]) and not set(train["id"]) & set(test["id"])
    assert len(test) > 2 * len(plain)
    capped = D.load_instructions(f"boolq:{path}%40@30", split="test")  # the cap applies after the split
    assert len(capped) == 30 and set(capped["id"]) <= set(test["id"])
    assert D.local_files_in_spec(f"boolq:{path}%40@30") == [str(path)]
    with pytest.raises(D.DataError, match="applies to a '<source>:<file>' part only"):
        D.load_instructions("boolq%40", split="test")
