"""Rubrics for CITING (paper §3.2): categories of instructions with the criteria a good answer meets.

Algorithm 1 line 5 designs the rubric, line 6 matches every instruction to a category (Eq. 1-2). One room per job:

* :mod:`~citing_trl.rubric.schema`: :class:`Category`, :class:`Rubric` (``rubric.json`` save/load) and the
  built-in :func:`default_rubric` (the paper's Table 4);
* :mod:`~citing_trl.rubric.design`: the teacher classifies a sample of instructions and writes criteria
  (:func:`design_rubric`), with robust parsing and repair of its answers;
* :mod:`~citing_trl.rubric.merge`: the per-batch categories merged down to at most M (:func:`merge_categories`);
* :mod:`~citing_trl.rubric.matching`: sentence-BERT matching (:class:`RubricMatcher`, :func:`assign_criteria`,
  :func:`load_embedder`) with a member-embedding cache.
"""

from citing_trl.rubric.design import design_rubric, extract_json_object, parse_rubric_answer, sample_instructions
from citing_trl.rubric.matching import (
    DEFAULT_EMBEDDER,
    EmbedderLoadError,
    Match,
    RubricMatcher,
    assign_criteria,
    averaging_matrix,
    category_distribution,
    embedder_name,
    embedding_dimension,
    encode,
    load_embedder,
    pairwise_scores,
)
from citing_trl.rubric.merge import merge_categories, normalize_name
from citing_trl.rubric.schema import Category, Rubric, RubricDesignError, default_rubric, embeddings_path_for

__all__ = [
    # schema
    "Category", "Rubric", "RubricDesignError", "default_rubric", "embeddings_path_for",
    # design and merge
    "design_rubric", "extract_json_object", "merge_categories", "normalize_name", "parse_rubric_answer",
    "sample_instructions",
    # matching
    "DEFAULT_EMBEDDER", "EmbedderLoadError", "Match", "RubricMatcher", "assign_criteria", "averaging_matrix",
    "category_distribution", "embedder_name", "embedding_dimension", "encode", "load_embedder", "pairwise_scores",
]
