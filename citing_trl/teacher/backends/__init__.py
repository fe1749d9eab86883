"""The one list of teacher backends: ``(name, mode)`` -> backend class.

``TeacherConfig`` validates ``backend`` and ``mode`` against it, and :class:`~citing_trl.teacher.Teacher`
builds its backend from it; nothing else lists the choices. A new backend is one class in one file, registered
with :func:`register_backend` (usable as a class decorator)::

    @register_backend
    class MyBackend(TeacherBackend):
        name = "mine"                  # TeacherConfig(backend="mine")
        summary = "my inference service"

        def run(self, jobs, desc):
            for job in jobs:
                for key in job.keys:
                    self.context.store(job, key, {"text": ...})
"""

from __future__ import annotations

from citing_trl.teacher.backends.base import BackendContext, Job, TeacherBackend
from citing_trl.teacher.backends.batch import BatchBackend
from citing_trl.teacher.backends.local import LocalBackend
from citing_trl.teacher.backends.openai import OpenAIBackend

BACKENDS: dict[tuple[str, str], type[TeacherBackend]] = {}


def register_backend(cls: type[TeacherBackend]) -> type[TeacherBackend]:
    """Make ``cls`` the backend of ``TeacherConfig(backend=cls.name, mode=cls.mode)``; returns ``cls``."""
    if not (isinstance(cls, type) and issubclass(cls, TeacherBackend)):
        raise TypeError(f"register_backend: {cls!r} is not a TeacherBackend subclass")
    if not cls.name or cls.name == TeacherBackend.name:
        raise TypeError(f"register_backend: {cls.__name__} has no `name`")
    BACKENDS[(cls.name, cls.mode)] = cls
    return cls


def backend_names() -> tuple[str, ...]:
    """The ``--backend`` choices, in the order they were registered."""
    return tuple(dict.fromkeys(name for name, _ in BACKENDS))


def backend_modes() -> tuple[str, ...]:
    """The ``--mode`` choices (``live`` first), in the order they were registered."""
    return tuple(dict.fromkeys(mode for _, mode in BACKENDS))


def backends_for_mode(mode: str) -> list[type[TeacherBackend]]:
    """The registered classes that serve ``mode``, in registration order."""
    return [cls for (_, m), cls in BACKENDS.items() if m == mode]


def backends_help() -> str:
    """``--backend``'s help, written from the registry (each live backend's ``summary``)."""
    return ", ".join(f"`{cls.name}` ({cls.summary})" for (_, mode), cls in BACKENDS.items() if mode == "live")


def modes_help() -> str:
    """``--mode``'s help, written from the registry: the modes and the backends that serve each."""
    return "; ".join(f"`{mode}`: " + " or ".join(f"`{cls.name}`" for cls in backends_for_mode(mode))
                     for mode in backend_modes())


def backend_class(name: str, mode: str = "live") -> type[TeacherBackend]:
    """The class registered for ``(name, mode)``; a ``KeyError`` when there is none (``TeacherConfig`` checks
    its values against the registry, so this only fails for a registry changed after the config was made)."""
    return BACKENDS[(name, mode)]


for _cls in (LocalBackend, OpenAIBackend, BatchBackend):
    register_backend(_cls)
del _cls

__all__ = [
    "BACKENDS", "BackendContext", "BatchBackend", "Job", "LocalBackend", "OpenAIBackend", "TeacherBackend",
    "backend_class", "backend_modes", "backend_names", "backends_for_mode", "backends_help", "modes_help",
    "register_backend",
]
