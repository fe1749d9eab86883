"""UsageLedger: what the teacher did (requests, cache hits, retries, failures, tokens) and roughly what it cost."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class UsageLedger:
    """What the teacher did and roughly what it cost; accumulates over every ``complete`` call."""

    requests: int = 0  # requests asked for (cache hits and in-batch duplicates included)
    cache_hits: int = 0  # answered from the cache without sending anything
    deduplicated: int = 0  # identical to an earlier request of the same batch, answered by that one's send
    requests_sent: int = 0  # distinct requests handed to the backend
    completed: int = 0  # of those, answered
    failures: int = 0  # of those, failed for good (retries spent or not retryable)
    abandoned: int = 0  # not sent, or not retried, because an earlier request failed (fail_fast)
    attempts: int = 0  # HTTP calls / generation slots, retries included
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)  # failed attempts by kind: "429", "500", "timeout", ...
    # Batch API (mode=batch): batches created, lines submitted, lines that failed or expired (then retried),
    # of those the ones sent live, and the tokens answered through a batch (billed at half price).
    batches_submitted: int = 0
    batch_lines: int = 0
    batch_failed_lines: int = 0
    batch_expired_lines: int = 0
    batch_retried_live: int = 0
    batch_prompt_tokens: int = 0
    batch_completion_tokens: int = 0
    price_prompt_per_1m: float = 0.0
    price_completion_per_1m: float = 0.0

    @property
    def estimated_cost(self) -> float:
        prompt = (self.prompt_tokens - 0.5 * self.batch_prompt_tokens) * self.price_prompt_per_1m
        completion = (self.completion_tokens - 0.5 * self.batch_completion_tokens) * self.price_completion_per_1m
        return (prompt + completion) / 1e6

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["errors"] = dict(sorted(self.errors.items()))
        out["estimated_cost"] = round(self.estimated_cost, 6)
        out["wall_seconds"] = round(self.wall_seconds, 3)
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.summary(), indent=2) + "\n")
        return path

    def print(self, console=None, title: str = "Teacher usage") -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, show_header=True)
        table.add_column("item")
        table.add_column("value", justify="right")
        for name, value in self.summary().items():
            if name.startswith("price_") or (name.startswith("batch") and not self.batch_lines):
                continue
            if name == "errors":
                value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
            elif name == "estimated_cost":
                value = f"{value:.4f}"
            table.add_row(name.replace("_", " "), str(value))
        (console or Console()).print(table)
