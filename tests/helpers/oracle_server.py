"""An *oracle* teacher: an OpenAI-compatible server on 127.0.0.1 that answers every prompt about a known task
with that task's gold answer (the row's ``output``).

It is the fixture for "does the student learn from right revisions": with it, CITING's teacher revision of a
wrong draft is the right answer, and its revision of a right draft is that same answer (the draft kept).
A prompt is matched to a task by the task text (instruction + input, as the prompt module writes it) that it
contains; the longest contained task wins. Prompts about no known task get ``fallback``.

    with oracle_server(rows) as server:          # rows: dicts with instruction, input, output
        ... TeacherConfig(backend="openai", base_url=server.base_url, model="oracle") ...

Run ``python -m tests.helpers.oracle_server --data boolq:../shared/data/boolq_dev.jsonl --port 8124`` to keep one up
for a measurement (every split of each ``--data`` spec is loaded, so training and held-out rows both match).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable

from citing_trl.prompts import instruction_text
from tests.helpers.fault_server import FaultServer


class OracleAnswers:
    """callable(messages) -> the gold answer of the task named in the last user message."""

    def __init__(self, rows: Iterable[dict], fallback: str = "I do not know."):
        self.gold: dict[str, str] = {}
        for r in rows:
            answer = r.get("output") or (r.get("answers") or [""])[0]
            self.gold[instruction_text(r["instruction"], r.get("input") or "")] = answer
        self.by_length = sorted(self.gold, key=len, reverse=True)
        self.fallback = fallback
        self.answered = 0
        self.unknown = 0

    def __call__(self, messages: list[dict]) -> str:
        text = messages[-1].get("content", "") if messages else ""
        for task in self.by_length:
            if task and task in text:
                self.answered += 1
                return self.gold[task]
        self.unknown += 1
        return self.fallback


def oracle_server(rows: Iterable[dict], latency: float = 0.0, port: int = 0) -> FaultServer:
    """A not-yet-started :class:`FaultServer` whose replies come from :class:`OracleAnswers`."""
    server = FaultServer(latency=latency, port=port, reply=OracleAnswers(rows))
    return server


if __name__ == "__main__":  # pragma: no cover - manual use for measurements
    import argparse

    from citing_trl.data import load_instructions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, help="a load_instructions spec (repeatable)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for spec in args.data:
        for split in ("train", "validation", "test"):
            try:
                rows += load_instructions(spec, split=split).to_list()
            except Exception as err:  # a single-split source may not have every split
                print(f"{spec} {split}: {err}", file=sys.stderr)
    srv = oracle_server(rows, port=args.port).start()
    print(f"oracle teacher for {len(rows)} rows serving on {srv.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        srv.stop()
