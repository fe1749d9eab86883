"""TeacherError: a teacher request failed for good (a user error: the server, the key or the model is at fault)."""

from __future__ import annotations

from citing_trl.errors import UserError


class TeacherError(UserError, RuntimeError):
    """A teacher request failed for good. The message names the request (index in the batch, short cache key,
    start of the prompt) and the reason; ``index``, ``key`` and ``reason`` hold the same facts."""

    def __init__(self, message: str, *, index: int | None = None, key: str | None = None, reason: str = ""):
        super().__init__(message)
        self.index = index
        self.key = key
        self.reason = reason
