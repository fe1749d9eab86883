"""The end-of-round view of verification: fix/break tables and the teacher's cost per kept row."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

FIX_BREAK_KEYS = ("wrong_to_right", "right_to_wrong", "right_to_right", "wrong_to_wrong", "no_gold")


def per_kept_row(usage: dict, kept: int) -> dict:
    """Teacher requests sent and tokens paid per kept training row (None when nothing was kept)."""
    tokens = usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
    return {
        "kept_rows": kept,
        "requests_per_kept_row": round(usage.get("requests_sent", 0) / kept, 3) if kept else None,
        "tokens_per_kept_row": round(tokens / kept, 1) if kept else None,
    }


def print_fix_break(report: dict, title: str, console: Console | None = None) -> None:
    """A rich table: one line per set (proposed, kept), one column per transition."""
    table = Table(title=title)
    table.add_column("revisions")
    for key in FIX_BREAK_KEYS:
        table.add_column(key.replace("_to_", "→").replace("_", " "), justify="right")
    labels = {"proposed": "proposed (pre-gate)", "kept": "kept (trained)"}
    for name, counts in report.items():
        table.add_row(labels.get(name, name), *(str(counts.get(k, 0)) for k in FIX_BREAK_KEYS))
    (console or Console()).print(table)


def print_round_report(k: int, report: dict, usage: dict, console: Console | None = None) -> None:
    """End-of-round view: the fix/break table and the teacher's cost per kept row."""
    console = console or Console()
    print_fix_break(report["fix_break"], f"Round {k}: r({k}) -> r({k + 1}) on rows with gold (gate: {report['gate']})",
                    console)
    table = Table(title=f"Round {k}: teacher cost per kept row")
    for name in ("kept_rows", "requests_sent", "requests_per_kept_row", "tokens_per_kept_row"):
        table.add_column(name.replace("_", " "), justify="right")
    table.add_row(*(str(usage.get(name)) for name in ("kept_rows", "requests_sent", "requests_per_kept_row",
                                                        "tokens_per_kept_row")))
    console.print(table)
