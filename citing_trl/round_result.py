"""One curriculum round's result (Algorithm 1 lines 8-10) as an object, and its files in ``round_<k>/`` (where
that folder is and how ranks shard a file: :mod:`citing_trl.run_layout`).

:class:`RoundResult` holds what a round produced: the student's drafts r(k), the accepted revisions r(k+1)
(the training rows), the rejected rows with their reasons, the reason counts, the teacher's usage and the
verification settings and fix/break report; after training also the adapter pi(k+1) and its loss. The pipeline
builds it in memory, then :meth:`RoundResult.save` writes it; :meth:`RoundResult.load` reads it back only when
the round was (partly) done by an earlier run or by another process.

    round_<k>/
      rollouts.jsonl         r(k), appended batch by batch (rollouts.rank<i>.jsonl with several processes)
      verification.json      the gate and best-of-K settings, ungated rows, fix/break counts
      rejected.jsonl         rows without a training revision, with the reason (and the gate's verdict)
      revision_counts.json   reason counts; they partition the rows
      teacher_usage.json     the round's teacher usage and its cost per kept row
      revisions.jsonl        the training rows: written last, it marks the revision stage done
      adapter/               pi(k+1)
      train_stats.json       optimizer steps, rows and tokens of the round's training (citing_trl/train_stats.py)
      summary.json           everything above in one file, written after training: it marks the round done
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from citing_trl.errors import UserError
from citing_trl.jsonl import read_jsonl, write_jsonl
from citing_trl.run_layout import read_shards

ROLLOUTS_FILE = "rollouts.jsonl"  # with several processes: one shard per rank (citing_trl.run_layout)


class NoRevisionsError(UserError, RuntimeError):
    """The teacher produced no usable revision in a round; its rejected.jsonl says why."""


def read_rollouts(rdir: str | Path, full: bool = False) -> dict:
    """The student's answers r(k) on disk in ``rdir`` (every shard file, any process count): ``{id: text}``, or
    with ``full`` the whole records (``response``, ``finish_reason``, ``completion_tokens``)."""
    records = read_shards(Path(rdir) / ROLLOUTS_FILE)
    return records if full else {i: r["response"] for i, r in records.items()}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


@dataclass
class RoundResult:
    """What round ``k`` produced; see the module docstring for the files it is saved to."""

    k: int
    responses: dict[str, str]  # r(k) of every row, by id
    accepted: list[dict] = field(default_factory=list)  # training rows: x, c, r(k), r(k+1), round
    rejected: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    usage: dict = field(default_factory=dict)
    verification: dict = field(default_factory=dict)
    adapter: Path | None = None  # pi(k+1), once trained
    train_loss: float | None = None

    def save(self, rdir: str | Path) -> None:
        """Write the revision stage's files; ``revisions.jsonl`` last, and only when a row was kept (it marks
        the stage done, so a round that kept nothing is asked again on a rerun)."""
        rdir = Path(rdir)
        (rdir / "verification.json").write_text(json.dumps(self.verification, indent=2))
        write_jsonl(rdir / "rejected.jsonl", self.rejected)
        (rdir / "revision_counts.json").write_text(json.dumps(self.counts, indent=2))
        (rdir / "teacher_usage.json").write_text(json.dumps(self.usage, indent=2))
        if self.accepted:
            write_jsonl(rdir / "revisions.jsonl", self.accepted)

    @classmethod
    def load(cls, rdir: str | Path, k: int) -> RoundResult:
        """The round as an earlier run (or the main process) left it on disk."""
        rdir = Path(rdir)
        summary = _read_json(rdir / "summary.json")
        return cls(
            k, read_rollouts(rdir), accepted=read_jsonl(rdir / "revisions.jsonl"),
            rejected=read_jsonl(rdir / "rejected.jsonl"), counts=_read_json(rdir / "revision_counts.json"),
            usage=_read_json(rdir / "teacher_usage.json"), verification=_read_json(rdir / "verification.json"),
            adapter=rdir / "adapter" if summary else None, train_loss=summary.get("train_loss"),
        )

    def summary(self, *, instructions: int, teacher_model: str, revision_settings: dict, timings: dict) -> dict:
        """The round's summary.json."""
        return {
            "round": self.k, "instructions": instructions, "revision_counts": self.counts,
            "trained_rows": len(self.accepted), "train_loss": self.train_loss, "teacher_model": teacher_model,
            "revision_settings": revision_settings, "teacher_usage": self.usage, "verification": self.verification,
            "timings_s": timings,
        }
