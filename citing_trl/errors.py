"""The one family of user errors.

A *user error* is something the person running a recipe can fix: a flag value out of range, a missing file, a
malformed data row, a model that cannot be found, a teacher that does not answer. Every such exception derives
from :class:`UserError`; :func:`citing_trl.cli.run_main` prints it as one ``error: ...`` line and exits 2.
Anything else is a bug and keeps its traceback.

The validators :func:`check`, :func:`check_choice` and :func:`check_path` raise :class:`ConfigError` naming the
flag; every settings class calls them in its ``__post_init__``.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Base class of every error a user can fix by changing a flag, a file or a service."""


class ConfigError(UserError, ValueError):
    """A recipe setting is unusable; the message names the flag (``--num_rounds must be >= 1, got -1``).

    ``flag`` is the flag's name without dashes when the error was raised for one field (see
    :func:`check`); :func:`citing_trl.configs.prefixed` uses it to name the prefixed flag."""

    def __init__(self, message: str, *, flag: str | None = None):
        super().__init__(message)
        self.flag = flag


class DataError(UserError, ValueError):
    """Unusable input data; the message names the file (or Hub id), the row and the field."""


def check(condition: bool, flag: str, problem: str, value) -> None:
    """Raise ConfigError('--flag problem, got value') unless ``condition``."""
    if not condition:
        raise ConfigError(f"--{flag} {problem}, got {value!r}", flag=flag)


def check_choice(flag: str, value, choices) -> None:
    check(value in choices, flag, f"must be one of {', '.join(map(str, choices))}", value)


def check_path(flag: str, value: str | None, kind: str = "file", must_contain: str | None = None) -> None:
    """An existing local path (``kind`` 'file' or 'folder'); ``must_contain`` names a file the folder needs."""
    if value is None:
        return
    path = Path(value)
    ok = path.is_file() if kind == "file" else path.is_dir()
    check(ok, flag, f"must be an existing {kind}", value)
    if must_contain:
        check((path / must_contain).is_file(), flag, f"must be a folder holding {must_contain}", value)
