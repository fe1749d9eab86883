"""The one place the teacher's API key is handled: read from the environment, and masked out of text.

The key lives only in the environment variable named by ``TeacherConfig.api_key_env``. Backends read it here when
they build a client (:func:`client_api_key`) and never keep it on an object that is printed, logged or cached.
Anything a server sends back can echo it (an error body quoting the ``Authorization`` header, say), so every
such text passes through :func:`redactor` / :func:`redact` before it reaches an error message, a log line or the
cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable

MASK = "***"  # what the key is replaced with
NO_KEY = "EMPTY"  # sent when the variable is unset: local OpenAI-compatible servers accept any key


def read_api_key(env_name: str) -> str:
    """The key in ``$env_name``, or ``""`` when the variable is unset or empty."""
    return os.environ.get(env_name) or ""


def client_api_key(env_name: str) -> str:
    """The key to build a client with: the one in ``$env_name``, or the dummy :data:`NO_KEY`."""
    return read_api_key(env_name) or NO_KEY


def redact(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` masked (unchanged when ``secret`` is empty)."""
    return text.replace(secret, MASK) if secret else text


def redactor(env_name: str) -> Callable[[str], str]:
    """A function that masks the key now in ``$env_name`` out of any text."""
    secret = read_api_key(env_name)

    def clean(text: str) -> str:
        return redact(text, secret)

    return clean
