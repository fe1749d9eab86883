"""Reading a chat-completions server's answers: which failures are retried and after how long (``Retry-After``,
jittered exponential backoff), and what a response body holds (:func:`parse_choices`).

Nothing here talks to a server; the backends (``backends/openai.py``, ``backends/batch.py``) do, and use these.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Callable, Mapping

RETRYABLE_STATUS = {408, 409, 425, 429}  # plus every 5xx


def is_retryable_status(status: int) -> bool:
    """Rate limits, timeouts, conflicts and every server error are worth another try; other 4xx are not."""
    return status in RETRYABLE_STATUS or status >= 500


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date. None if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds)


def retry_after_of(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asks to wait: ``Retry-After`` (seconds or an HTTP date), else ``retry-after-ms``."""
    if headers is None:
        return None
    retry_after = parse_retry_after(headers.get("retry-after"))
    if retry_after is None:
        ms = headers.get("retry-after-ms")
        try:
            retry_after = float(ms) / 1000 if ms is not None else None
        except ValueError:
            retry_after = None
    return retry_after


def backoff_delay(tries: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds to wait before retry ``tries`` (1, 2, ...): uniform in [0, min(cap, base * 2**(tries-1))] (full
    jitter), and never less than a server's ``retry_after`` (plus up to 10% jitter), even beyond ``cap``."""
    delay = random.uniform(0, min(cap, base * 2 ** (tries - 1)))
    if retry_after is not None:  # the server knows best: never come back earlier
        delay = max(delay, retry_after + random.uniform(0, 0.1 * retry_after))
    return delay


class MalformedResponse(Exception):
    """A 200 response whose body is not a chat completion with text (retried like a server error)."""


class AttemptFailed(Exception):
    """One failed attempt, classified."""

    def __init__(self, kind: str, detail: str, retryable: bool, retry_after: float | None = None):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.retryable = retryable
        self.retry_after = retry_after


def parse_choices(body: str, redact: Callable[[str], str] = lambda text: text) -> list[dict]:
    """One result (text, finish reason, token counts) per choice of a chat completion body, in choice order;
    `MalformedResponse` when it is not one. The usage block counts all choices together: every choice carries the
    prompt's token count (billed once per call), and the completion tokens are shared out evenly (their sum
    is the exact total)."""
    excerpt = redact(body)[:80]
    try:
        data = json.loads(body)
    except ValueError as err:
        raise MalformedResponse(f"response body is not JSON ({err.msg}): {excerpt!r}") from None
    if not isinstance(data, dict):
        raise MalformedResponse(f"response body is not a JSON object: {excerpt!r}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
        raise MalformedResponse(f"response has no choices: {excerpt!r}")
    choices = sorted(choices, key=lambda c: c.get("index") if isinstance(c.get("index"), int) else 0)
    results = []
    for choice in choices:
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise MalformedResponse(f"response choice has no text content: {excerpt!r}")
        results.append({"text": content, "finish_reason": choice.get("finish_reason")})
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    share, extra = divmod(completion, len(results))
    for pos, result in enumerate(results):
        result["prompt_tokens"] = prompt
        result["completion_tokens"] = share + (1 if pos < extra else 0)
    return results
