"""The shape of the package, drawn from its imports (module-level and inside functions alike, read with ``ast``):
the CITING core sits below the baselines, and the round's modules are in no import circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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
