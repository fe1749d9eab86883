"""Tests that guard the shape of the code: settings are declared once, every launcher starts, the core never imports
the baselines, and the round's modules sit in no import circle."""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from citing_trl.generation import DecodingConfig
from citing_trl.teacher import TeacherConfig
from tests.conftest import REPO

# A recipe puts a settings class on its command line under these prefixes (citing_trl.configs.prefixed).
PREFIXES = {TeacherConfig: ("teacher_", "judge_"), DecodingConfig: ("rollout_", "sample_")}
SOURCES = ("citing_trl", "recipes", "baselines")

# Same name as a prefixed field, but not a copy of it (file, class, field): reason.
NOT_A_COPY = {
    ("citing_trl/evaluation/config.py", "EvaluationArguments", "judge_mode"):
        "the verdict format (joint/per_aspect); the judge's TeacherConfig.mode is set by --judge_batch",
    ("citing_trl/rubric/schema.py", "Rubric", "teacher_model"):
        "provenance saved in rubric.json (which teacher designed the rubric), not a setting",
}
# Copies the baselines branch is converting to prefixed views; delete each line once its class has no copy.
PENDING: set[tuple[str, str, str]] = set()


def copied_fields(files: dict[str, str]) -> set[tuple[str, str, str]]:
    """(file, class, field) of every field a ``@dataclass`` class declares under a prefixed name of a
    TeacherConfig or DecodingConfig field. Views made by ``prefixed`` declare nothing in source, so only
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
    assert not copies, (f"declared again instead of parsed through a prefixed view of TeacherConfig/DecodingConfig "
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
    """recipes/infer.py parses DecodingConfig's fields under their own names next to InferenceArguments."""
    from citing_trl.self_revision import AnswerGenerationArguments, InferenceArguments

    generation = {f.name for f in dataclasses.fields(DecodingConfig)}
    assert not generation & {f.name for f in dataclasses.fields(InferenceArguments)}
    assert AnswerGenerationArguments._base is DecodingConfig


def declarations(files: dict[str, str], names: set[str]) -> dict[str, list[tuple[str, str]]]:
    """Where each of ``names`` is declared as a field of a ``@dataclass`` class: name -> [(file, class), ...]."""
    found: dict[str, list[tuple[str, str]]] = {n: [] for n in names}
    for path, source in files.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and any(_is_dataclass(d) for d in node.decorator_list):
                for s in node.body:
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name) and s.target.id in names:
                        found[s.target.id].append((path, node.name))
    return found


# Settings two recipes must agree on, and the place each is declared (the other classes inherit it)
SHARED = {
    "revision_prompt": ("citing_trl/citing_config.py", "RevisionStyleArguments"),  # CITING run and recipes/infer.py
    "embedding_model": ("citing_trl/citing_config.py", "RevisionStyleArguments"),
}
BASELINE_SHARED = {"sft_adapter": ("citing_trl/baselines/common.py", "StartArguments")}  # RRHF/RAFT/DPO and PPO/RLOO


def test_settings_shared_by_recipes_are_declared_once():
    files = project_sources()
    assert {n: places for n, places in declarations(files, set(SHARED)).items()} == {n: [p] for n, p in SHARED.items()}
    baselines = {k: v for k, v in files.items() if k.startswith(("citing_trl/baselines/", "baselines/"))}
    assert declarations(baselines, set(BASELINE_SHARED)) == {n: [p] for n, p in BASELINE_SHARED.items()}
    from citing_trl.baselines.common import BaselineArguments, StartArguments
    from citing_trl.baselines.ppo.config import RLHFArguments
    from citing_trl.citing_config import CitingArguments, RevisionStyleArguments
    from citing_trl.self_revision import InferenceArguments

    assert issubclass(CitingArguments, RevisionStyleArguments) and issubclass(InferenceArguments, RevisionStyleArguments)
    assert issubclass(BaselineArguments, StartArguments) and issubclass(RLHFArguments, StartArguments)


def test_the_declaration_finder_sees_a_second_copy():
    source = ("from dataclasses import dataclass\n@dataclass\nclass A:\n    revision_prompt: str = 'improve'\n"
              "@dataclass\nclass B:\n    revision_prompt: str = 'x'\n    other: int = 0\n")
    assert declarations({"x.py": source}, {"revision_prompt"}) == {"revision_prompt": [("x.py", "A"), ("x.py", "B")]}


def launchers() -> list[Path]:
    return sorted((REPO / "recipes").glob("*.py")) + sorted((REPO / "baselines").glob("*.py"))


@pytest.mark.parametrize(
    "script",
    [pytest.param(p, marks=[pytest.mark.slow], id=f"{p.parent.name}/{p.name}")
     for p in launchers()],
)
def test_launcher_help_exits_0(script):
    """argparse formats every help string only for --help (a bare '%' once crashed recipes/evaluate.py)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "usage:" in proc.stdout


PACKAGE = Path(__file__).resolve().parents[1] / "citing_trl"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module name ``source`` imports anywhere (top level, functions, methods; relative imports resolved;
    ``importlib.import_module("...")`` and ``__import__("...")`` with a literal name), with each name's
    ``from x import y`` member spelled out as ``x.y`` too."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__"):
                names.add(node.args[0].value)
    return names


def core_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "baselines" not in p.relative_to(PACKAGE).parts)


def imports_baselines(names: set[str]) -> list[str]:
    return sorted(n for n in names if n == "citing_trl.baselines" or n.startswith("citing_trl.baselines."))


def test_the_scanner_sees_every_kind_of_import():
    source = '''
import citing_trl.baselines.ppo
def f():
    from citing_trl.baselines.reward_model import RewardScorer
class C:
    def m(self):
        from ..baselines import raft
        from citing_trl import baselines
        importlib.import_module("citing_trl.baselines.rrhf")
'''
    found = imports_baselines(imported_names(source, "citing_trl.evaluation.runner"))
    assert found == ["citing_trl.baselines", "citing_trl.baselines.ppo", "citing_trl.baselines.raft",
                     "citing_trl.baselines.reward_model", "citing_trl.baselines.reward_model.RewardScorer",
                     "citing_trl.baselines.rrhf"]
    assert imports_baselines(imported_names("from citing_trl.reward import RewardScorer", "citing_trl.x")) == []


def test_core_never_imports_the_baselines():
    """``citing_trl/baselines/`` may import the core, never the reverse (no module outside it imports it)."""
    offenders = {}
    for path in core_modules():
        found = imports_baselines(imported_names(path.read_text(), module_name(path), path.name == "__init__.py"))
        if found:
            offenders[str(path.relative_to(PACKAGE.parent))] = found
    assert not offenders, f"core modules importing citing_trl.baselines: {offenders}"


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in its source)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        edges = set()
        for target in imported_names(path.read_text(), name, path.name == "__init__.py"):
            while target and target not in paths:  # citing_trl.x.y (a class or function) -> citing_trl.x
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """An import path from ``start`` back to itself, or None."""
    seen, todo = set(), [(start, [start])]
    while todo:
        node, path = todo.pop()
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                todo.append((nxt, path + [nxt]))
    return None


ROUND_MODULES = [
    "citing_trl.verification", "citing_trl.verification.base", "citing_trl.verification.format_filter",
    "citing_trl.verification.selection", "citing_trl.verification.none", "citing_trl.verification.gold",
    "citing_trl.verification.judge", "citing_trl.verification.reward", "citing_trl.revision", "citing_trl.reward",
    "citing_trl.round_result", "citing_trl.pipeline", "citing_trl.citing_trainer",
]


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycle_through(graph, "a") == ["a", "b", "c", "a"]
    assert cycle_through(graph, "d") is None


@pytest.mark.parametrize("module", ROUND_MODULES)
def test_round_modules_are_in_no_import_circle(module):
    """revision -> verification -> (format filter, gates) -> reward, one way: none of them is on a circle."""
    graph = import_graph()
    assert module in graph, f"{module} is not a module of the package"
    assert cycle_through(graph, module) is None, " -> ".join(cycle_through(graph, module))


def test_every_error_class_is_a_user_error():
    """One user-error family: each ``*Error`` class the project defines derives from UserError, so ``run_main``
    prints it as one line (internal control-flow exceptions are not named ``*Error``)."""
    import importlib
    import inspect

    from citing_trl.errors import UserError

    outside = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = importlib.import_module(module_name(path))
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__
                    and name.endswith("Error") and not issubclass(obj, UserError)):
                outside.append(f"{module.__name__}.{name}")
    assert not outside, f"not in the UserError family: {outside}"


def test_project_imports_sit_at_module_top():
    """Imports of the project's own modules are at module level (lazy loading is for package exports only)."""
    inside = []
    for path in sorted(PACKAGE.rglob("*.py")) + sorted((REPO / "recipes").glob("*.py")) + sorted(
            (REPO / "baselines").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("citing_trl"):
                    inside.append(f"{path.relative_to(REPO)}:{node.lineno} ({fn.name})")
    assert not inside, f"imports inside functions: {inside}"


# --------------------------------------------------------------------------------------------------
# Issue 25: settings travel whole, one owner per layout, registries that speak for themselves
# --------------------------------------------------------------------------------------------------


def test_revision_filter_entry_points_agree_on_every_default():
    """The revision filter's settings are one frozen object: no entry point of the filter declares a setting of
    its own (so none can default differently), each takes the object whole, and the flags carry its defaults."""
    import inspect

    from citing_trl.citing_config import CitingArguments
    from citing_trl.revision import teacher_revisions
    from citing_trl.verification import RevisionSettings, reject_reason, select_revisions

    names = {f.name for f in dataclasses.fields(RevisionSettings)}
    assert RevisionSettings.__dataclass_params__.frozen
    for fn in (teacher_revisions, select_revisions, reject_reason):
        params = inspect.signature(fn).parameters
        own = names & set(params) | {"reject_truncated", "reference", "num_samples", "gate_mode", "temperature"} & set(params)
        assert not own, f"{fn.__module__}.{fn.__name__} declares filter settings of its own: {sorted(own)}"
        assert params["settings"].default is None, f"{fn.__name__}: settings default to RevisionSettings()"
    flags = {f.name: f.default for f in dataclasses.fields(CitingArguments)}
    defaults = RevisionSettings()
    assert {n: flags[n] for n in names} == {n: getattr(defaults, n) for n in names}
    assert CitingArguments().revision_settings() == defaults


def test_a_filter_default_is_the_same_through_every_entry_point():
    """A caller relying on a default gets the same filter wherever it enters (keep_identical and
    keep_complete_truncated used to default differently in reject_reason and select_revisions)."""
    from citing_trl.revision import teacher_revisions
    from citing_trl.teacher import Completion
    from citing_trl.verification import reject_reason, select_revisions

    row = {"id": "a", "instruction": "Say hi.", "input": "", "criteria": "- be short", "category": None}
    cases = [("Hi there.", "Hi there.", "stop"), ("Hi there.", "Hello. It is a fine day to greet you.", "length")]
    for draft, revision, finish in cases:
        out = Completion(revision, finish, 5, 3)

        class Echo:
            def complete_detailed(self, requests, desc="", out=out):
                return [out for _ in requests]

        direct = reject_reason(row, draft, revision, finish)
        selected = select_revisions([row], {"a": draft}, [[out]])
        revised = teacher_revisions(Echo(), [row], {"a": draft})
        assert (direct is None) == bool(selected.accepted) == bool(revised.accepted), (draft, revision, finish)
        assert selected.counts == revised.counts


def test_only_the_layout_module_parses_round_folders():
    """``round_<k>`` is named and parsed in citing_trl/run_layout.py alone; rank shards are named there too."""
    import re

    owner = "citing_trl/run_layout.py"
    parsing = re.compile(r"glob\(\s*f?[\"']round_|name\[6:\]|f[\"']round_\{\w+\}[\"'/]|[\"']rollouts\*|f[\"'][^\"']*\.rank\{")
    offenders = [f"{name}:{n}" for name, source in project_sources().items() if name != owner
                 for n, line in enumerate(source.splitlines(), 1) if parsing.search(line)]
    assert not offenders, f"run-folder layout parsed outside {owner}: {offenders}"


def test_layout_finds_rounds_and_shards(tmp_path):
    from citing_trl.jsonl import append_jsonl, read_jsonl
    from citing_trl.run_layout import join_shards, own_file, read_shards, round_dir, round_dirs, shard_path

    for k in (10, 2, 0):
        round_dir(tmp_path, k).mkdir()
    (tmp_path / "round_x").mkdir()
    (tmp_path / "round_3.txt").write_text("")
    assert [d.name for d in round_dirs(tmp_path)] == ["round_0", "round_2", "round_10"]
    base = tmp_path / "step_0.jsonl"
    assert own_file(base, 0, 1) == base and own_file(base, 1, 2) == shard_path(base, 1) == tmp_path / "step_0.rank1.jsonl"
    append_jsonl(shard_path(base, 1), [{"id": "b"}])
    append_jsonl(shard_path(base, 0), [{"id": "c"}, {"id": "a"}])
    assert set(read_shards(base)) == {"a", "b", "c"}
    join_shards(base, ["a", "b", "c"])
    assert [r["id"] for r in read_jsonl(base)] == ["a", "b", "c"] and not list(tmp_path.glob("*.rank*"))


def test_ruff_is_configured_and_run_before_the_tests():
    """A linter is configured in pyproject.toml, installed by the dev extra, and `make test` (so .ci/run) runs it
    before pytest."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["tool"]["ruff"]["lint"]["select"], "no ruff rule set"
    assert any(dep.startswith("ruff") for dep in project["project"]["optional-dependencies"]["dev"])
    makefile = (REPO / "Makefile").read_text()
    test_target = makefile[makefile.index("\ntest:"):].split("\n\n")[0]
    assert "lint" in test_target.splitlines()[1] and "ruff check" in makefile[makefile.index("\nlint:"):]
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_every_noqa_in_the_package_says_why():
    """A `# noqa` in the package or the launchers names its rule and why it is needed."""
    import re

    bare = [f"{name}:{n}" for name, source in project_sources().items()
            for n, line in enumerate(source.splitlines(), 1)
            if "# noqa" in line and not re.search(r"# noqa: [A-Z]+\d+(,[A-Z]+\d+)*\s*[-(]\s*\w+", line)]
    assert not bare, f"noqa without its rule and reason: {bare}"


@pytest.mark.slow
def test_the_tree_is_clean_under_ruff():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_public_names_are_unambiguous():
    """No two modules of the package define a public function or class of the same name (``teacher_revisions``
    once named both the teacher's revision step and a run-folder reader; ``check_settings`` three checks)."""
    seen: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                seen.setdefault(node.name, []).append(str(path.relative_to(REPO)))
    twice = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not twice, f"defined in several modules: {twice}"


def test_help_texts_are_written_from_the_registries():
    """--revision_gate, --teacher_backend / --judge_backend and --dataset list what their registries hold, so a
    new gate, backend or source appears in the help without editing it."""
    from citing_trl.citing_config import CitingArguments
    from citing_trl.data import FAMILIES, SOURCES
    from citing_trl.evaluation.config import JudgeArguments
    from citing_trl.sft import DataArguments
    from citing_trl.teacher import TeacherConfig
    from citing_trl.teacher.backends import BACKENDS
    from citing_trl.verification import GATES

    def help_of(cls, name):
        return next(f.metadata["help"] for f in dataclasses.fields(cls) if f.name == name)

    assert all(f"'{name}': {cls.help}" in help_of(CitingArguments, "revision_gate") for name, cls in GATES.items())
    for cls, name in ((TeacherConfig, "backend"), (JudgeArguments, "judge_backend")):
        text = help_of(cls, name)
        assert all(f"`{b.name}` ({b.summary})" in text for (_, mode), b in BACKENDS.items() if mode == "live")
    assert all(f"`{mode}`" in help_of(TeacherConfig, "mode") for _, mode in BACKENDS)
    data_help = help_of(DataArguments, "dataset")
    assert all(name in data_help for name in [*FAMILIES, *SOURCES])


def test_the_pipeline_does_not_branch_on_a_backend_name():
    """The teacher preflight belongs to the backend (TeacherBackend.preflight through Teacher.preflight)."""
    source = (PACKAGE / "pipeline.py").read_text()
    assert ".backend ==" not in source and ".backend !=" not in source and '"local"' not in source


@pytest.mark.parametrize("module", ["citing_trl.teacher", "citing_trl.teacher.config", "citing_trl.teacher.client",
                                    "citing_trl.teacher.backends", "citing_trl.teacher.backends.base",
                                    "citing_trl.teacher.backends.local", "citing_trl.run_layout",
                                    "citing_trl.verification.settings", "citing_trl.errors"])
def test_teacher_layout_and_settings_modules_are_in_no_import_circle(module):
    graph = import_graph()
    assert module in graph, f"{module} is not a module of the package"
    assert cycle_through(graph, module) is None, " -> ".join(cycle_through(graph, module))


def test_test_only_helpers_live_under_tests():
    """The tiny test model, the shared-dir self-test, the old cache alias and ready-made gates are test code."""
    import citing_trl.distributed
    import citing_trl.models
    import citing_trl.teacher
    import citing_trl.verification

    assert not hasattr(citing_trl.models, "build_tiny_model") and not hasattr(citing_trl.distributed, "_selftest")
    assert not hasattr(citing_trl.teacher, "_Cache")
    assert not {"gold_gate", "no_gate"} & set(vars(citing_trl.verification))
    source = (PACKAGE / "models.py").read_text()
    assert "citing_trl.prompts" not in source and "citing_trl.data" not in source


def test_one_progress_bar():
    """rich's Progress is built in citing_trl/progress.py alone (generation, the teacher's live and batch paths)."""
    import re

    built = [name for name, source in project_sources().items()
             if re.search(r"\bProgress\(", source) and name != "citing_trl/progress.py"]
    assert not built, f"a progress bar built outside citing_trl/progress.py: {built}"


def test_one_normal_quantile_and_one_bootstrap_resampler():
    sources = project_sources()
    assert [n for n, s in sources.items() if "1.959963984540054" in s] == ["citing_trl/evaluation/stats.py"]
    assert [n for n, s in sources.items() if "default_rng(seed).integers" in s or "rng.integers(0, x.size" in s] \
        == ["citing_trl/evaluation/stats.py"]


def test_no_config_class_shadows_a_transformers_name():
    """The project's decoding settings are `DecodingConfig`: a `GenerationConfig` of our own would shadow
    transformers' class of that name in any module that needs both."""
    import transformers

    import citing_trl

    ours = {name for name in dir(citing_trl) if name.endswith("Config")}
    from citing_trl import generation

    ours |= {name for name in vars(generation) if name.endswith("Config") and
             getattr(vars(generation)[name], "__module__", "").startswith("citing_trl")}
    clash = sorted(name for name in ours if hasattr(transformers, name)
                   and getattr(getattr(citing_trl, name, None) or vars(generation).get(name), "__module__", "")
                   .startswith("citing_trl"))
    assert not clash, clash
