"""The shape of the ``citing_trl.rubric`` package: its public names and its error classes."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import citing_trl
import citing_trl.rubric as R
from citing_trl.errors import UserError

# every public name of the old rubric_design.py and rubric_matching.py, with the room it lives in now
PUBLIC = {
    "Category": "schema", "Rubric": "schema", "RubricDesignError": "schema", "default_rubric": "schema",
    "embeddings_path_for": "schema",
    "design_rubric": "design", "extract_json_object": "design", "parse_rubric_answer": "design",
    "sample_instructions": "design",
    "merge_categories": "merge", "normalize_name": "merge",
    "DEFAULT_EMBEDDER": "matching", "EmbedderLoadError": "matching", "Match": "matching", "RubricMatcher": "matching",
    "assign_criteria": "matching", "averaging_matrix": "matching", "category_distribution": "matching",
    "embedder_name": "matching", "embedding_dimension": "matching", "encode": "matching",
    "load_embedder": "matching", "pairwise_scores": "matching",
}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_names_reexported_from_their_room(name):
    room = importlib.import_module(f"citing_trl.rubric.{PUBLIC[name]}")
    assert getattr(R, name) is getattr(room, name)


def test_all_is_exactly_the_public_names():
    assert sorted(R.__all__) == sorted(PUBLIC)


@pytest.mark.parametrize("error", [R.RubricDesignError, R.EmbedderLoadError])
def test_errors_are_user_errors_and_keep_their_old_base(error):
    assert issubclass(error, UserError) and issubclass(error, RuntimeError)


def test_old_modules_are_gone():
    # by file, not by import: an editable install of another checkout could still serve the old module names
    package = Path(citing_trl.__file__).parent
    assert (package / "rubric").is_dir()
    for old in ("rubric_design.py", "rubric_matching.py"):
        assert not (package / old).exists(), old
