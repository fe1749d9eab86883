"""Tests that guard the shape of the code: settings are declared once, and every launcher starts."""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from citing_trl.generation import GenerationConfig
from citing_trl.teacher import TeacherConfig
from tests.conftest import REPO

# A recipe puts a settings class on its command line under these prefixes (citing_trl.configs.prefixed).
PREFIXES = {TeacherConfig: ("teacher_", "judge_"), GenerationConfig: ("rollout_", "sample_")}
SOURCES = ("citing_trl", "recipes", "baselines")

# Same name as a prefixed field, but not a copy of it (file, class, field): reason.
NOT_A_COPY = {
    ("citing_trl/evaluation/config.py", "EvaluationArguments", "judge_mode"):
        "the verdict format (joint/per_aspect); the judge's TeacherConfig.mode is set by --judge_batch",
    ("citing_trl/rubric_design.py", "Rubric", "teacher_model"):
        "provenance saved in rubric.json (which teacher designed the rubric), not a setting",
}
# Copies the baselines branch is converting to prefixed views; delete each line once its class has no copy.
PENDING = {
    ("citing_trl/baselines/raft.py", "RAFTConfig", "sample_temperature"),
    ("citing_trl/baselines/raft.py", "RAFTConfig", "sample_top_p"),
    ("citing_trl/baselines/rrhf.py", "RRHFConfig", "sample_temperature"),
    ("citing_trl/baselines/rrhf.py", "RRHFConfig", "sample_top_p"),
    ("baselines/compare.py", "CompareArguments", "judge_backend"),
    ("baselines/compare.py", "CompareArguments", "judge_model"),
    ("baselines/compare.py", "CompareArguments", "judge_base_url"),
}


def copied_fields(files: dict[str, str]) -> set[tuple[str, str, str]]:
    """(file, class, field) of every field a ``@dataclass`` class declares under a prefixed name of a
    TeacherConfig or GenerationConfig field. Views made by ``prefixed`` declare nothing in source, so only
    hand-written copies are found."""
    copies = {prefix + f.name for base, prefixes in PREFIXES.items() for prefix in prefixes
              for f in dataclasses.fields(base) if f.init}
    found = set()
    for name, source in files.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and any(_is_dataclass(d) for d in node.decorator_list):
                found |= {(name, node.name, s.target.id) for s in node.body
                          if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name) and s.target.id in copies}
    return found


def _is_dataclass(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Name) and target.id == "dataclass") or (
        isinstance(target, ast.Attribute) and target.attr == "dataclass")


def project_sources() -> dict[str, str]:
    return {str(p.relative_to(REPO)): p.read_text(encoding="utf-8")
            for d in SOURCES for p in sorted((REPO / d).rglob("*.py"))}


def test_no_teacher_or_generation_field_is_declared_twice():
    found = copied_fields(project_sources())
    copies = found - set(NOT_A_COPY) - PENDING
    assert not copies, (f"declared again instead of parsed through a prefixed view of TeacherConfig/GenerationConfig "
                        f"(citing_trl.configs.prefixed): {sorted(copies)}")
    stale = PENDING - found
    assert not stale, f"converted: delete these lines from PENDING in tests/test_structure.py: {sorted(stale)}"


def test_the_copy_finder_finds_a_copy():
    source = ("from dataclasses import dataclass, field\n"
              "@dataclass\nclass A:\n    teacher_max_tokens: int = 512\n    rollout_mode: str = 'revise'\n"
              "@dataclasses.dataclass(frozen=True)\nclass B:\n    sample_top_k: int = 0\n    judge_timeout: float = 1.0\n"
              "class NotADataclass:\n    rollout_seed: int = 0\n")
    assert copied_fields({"x.py": source}) == {("x.py", "A", "teacher_max_tokens"), ("x.py", "B", "sample_top_k"),
                                               ("x.py", "B", "judge_timeout")}


def test_unprefixed_generation_flags_are_declared_once():
    """recipes/infer.py parses GenerationConfig's fields under their own names next to InferenceArguments."""
    from citing_trl.self_revision import AnswerGenerationArguments, InferenceArguments

    generation = {f.name for f in dataclasses.fields(GenerationConfig)}
    assert not generation & {f.name for f in dataclasses.fields(InferenceArguments)}
    assert AnswerGenerationArguments._base is GenerationConfig


def launchers() -> list[Path]:
    return sorted((REPO / "recipes").glob("*.py")) + sorted((REPO / "baselines").glob("*.py"))


@pytest.mark.parametrize(
    "script",
    [pytest.param(p, marks=[pytest.mark.slow] if p.parent.name == "baselines" else [], id=f"{p.parent.name}/{p.name}")
     for p in launchers()],
)
def test_launcher_help_exits_0(script):
    """argparse formats every help string only for --help (a bare '%' once crashed recipes/evaluate.py)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "usage:" in proc.stdout
