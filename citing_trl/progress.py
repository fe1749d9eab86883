"""The one progress bar: description, bar, done/total, elapsed time (and optionally one live field).

Student generation (:mod:`citing_trl.generation`), the teacher's live requests and its batch polls
(:mod:`citing_trl.teacher.backends`) all draw the same bar.
"""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def progress_bar(show: bool = True, field: str | None = None) -> Progress:
    """A rich progress bar (``show`` False: disabled); ``field`` adds a column showing ``task.fields[field]``,
    which every task of the bar must then set (e.g. ``progress.add_task(desc, total=n, note="")``)."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if field is not None:
        columns.append(TextColumn(f"{{task.fields[{field}]}}"))
    return Progress(*columns, disable=not show, transient=False)
