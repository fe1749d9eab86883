"""citing-trl: CITING (Curriculum Instruction TunING, arXiv 2310.02527) and its baselines on TRL.

Modules follow Algorithm 1: ``sft`` (lines 2-4), ``rubric.design`` (line 5), ``rubric.matching`` (line 6),
``revision`` + ``verification`` (lines 8-9), ``citing_config`` + ``citing_trainer`` (line 10), ``pipeline``
(lines 7-11), ``self_revision`` (lines 12-15). Shared pieces: ``prompts``, ``generation``, ``teacher``, ``models``,
``data``, ``jsonl``, ``configs``, ``errors``, ``cli``.
Imports are lazy so that ``import citing_trl`` stays cheap.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "CitingConfig": "citing_trl.citing_config",
    "CitingTrainer": "citing_trl.citing_trainer",
    "CitingArguments": "citing_trl.citing_config",
    "CitingPipeline": "citing_trl.pipeline",
    "Teacher": "citing_trl.teacher",
    "TeacherConfig": "citing_trl.teacher",
    "DecodingConfig": "citing_trl.generation",
    "generate": "citing_trl.generation",
    "load_instructions": "citing_trl.data",
    "load_model": "citing_trl.models",
}

__all__ = sorted(_EXPORTS)


def lazy_exports(package: str, exports: dict[str, str]):
    """A module ``__getattr__`` that imports ``exports[name]`` (a module path) on first access of ``name``."""

    def __getattr__(name):
        if name in exports:
            import importlib

            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


__getattr__ = lazy_exports(__name__, _EXPORTS)
