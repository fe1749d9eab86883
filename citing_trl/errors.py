"""The one family of user errors.

A *user error* is something the person running a recipe can fix: a flag value out of range, a missing file, a
malformed data row, a model that cannot be found, a teacher that does not answer. Every such exception derives
from :class:`UserError`; :func:`citing_trl.cli.run_main` prints it as one ``error: ...`` line and exits 2.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Base class of every error a user can fix by changing a flag, a file or a service."""


class ConfigError(UserError, ValueError):
    """A recipe setting is unusable; the message names the flag (``--num_rounds must be >= 1, got -1``).

    ``flag`` is the flag's name without dashes when the error was raised for one field (see
    :func:`citing_trl.cli.check`); :func:`citing_trl.configs.prefixed` uses it to name the prefixed flag."""

    def __init__(self, message: str, *, flag: str | None = None):
        super().__init__(message)
        self.flag = flag


class DataError(UserError, ValueError):
    """Unusable input data; the message names the file (or Hub id), the row and the field."""
