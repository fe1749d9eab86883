"""Retry decisions and response-body parsing of the teacher (citing_trl/teacher/responses.py)."""

from __future__ import annotations

import json
import random

import pytest

from citing_trl.teacher.responses import (
    MalformedResponse,
    backoff_delay,
    is_retryable_status,
    parse_choices,
    retry_after_of,
)


def test_retryable_statuses():
    assert all(is_retryable_status(s) for s in (408, 409, 425, 429, 500, 503, 599))
    assert not any(is_retryable_status(s) for s in (400, 401, 403, 404, 422))


def test_retry_after_headers():
    assert retry_after_of(None) is None and retry_after_of({}) is None
    assert retry_after_of({"retry-after": "2"}) == 2.0
    assert retry_after_of({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_of({"retry-after": "soon", "retry-after-ms": "250"}) == 0.25
    assert retry_after_of({"retry-after-ms": "later"}) is None


def test_backoff_is_jittered_capped_and_never_earlier_than_asked():
    random.seed(0)
    delays = [backoff_delay(tries, base=1.0, cap=4.0) for tries in (1, 2, 3, 10) for _ in range(200)]
    assert all(0 <= d <= 4.0 for d in delays) and max(delays[:200]) <= 1.0
    assert all(30.0 <= backoff_delay(1, base=1.0, cap=4.0, retry_after=30.0) <= 33.0 for _ in range(50))


def test_parse_choices_orders_choices_and_shares_tokens():
    body = {"choices": [{"index": 1, "message": {"content": "B"}, "finish_reason": "length"},
                        {"index": 0, "message": {"content": "A"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7}}
    out = parse_choices(json.dumps(body))
    assert [(r["text"], r["finish_reason"], r["prompt_tokens"], r["completion_tokens"]) for r in out] == [
        ("A", "stop", 5, 4), ("B", "length", 5, 3)]
    with pytest.raises(MalformedResponse, match="not JSON.*'\\*\\*\\*"):
        parse_choices("<html>sk-key</html>", lambda text: text.replace("<html>sk-key", "***"))
    with pytest.raises(MalformedResponse, match="no choices"):
        parse_choices('{"choices": []}')
    with pytest.raises(MalformedResponse, match="no text content"):
        parse_choices('{"choices": [{"message": {"content": null}}]}')
