"""Throughput of the teacher client (openai backend) against a local server with a fixed answer latency.

For each concurrency C, N fresh requests go through ``Teacher.complete``; the wall time is divided by the
ideal N / C x latency (a server that answers in exactly ``latency`` seconds and a client with no overhead).
A ratio of 1.0 is perfect; what lies above it is client overhead (client set-up, JSON, cache writes with
fsync, the progress bar) and server overhead. No thresholds: it prints a table.

    python bench/bench_teacher.py                      # N=64, C=1,4,16, 200 ms latency
    python bench/bench_teacher.py --n 128 --concurrency 1 8 32 --json bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from citing_trl.teacher import Teacher, TeacherConfig  # noqa: E402
from tests.helpers.fault_server import FaultServer  # noqa: E402


@contextlib.contextmanager
def fault_server(latency: float, in_process: bool):
    """The fault server's base URL; by default in its own process, so that it does not share the client's GIL."""
    if in_process:
        with FaultServer(latency=latency) as server:
            yield server.base_url
        return
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "helpers" / "fault_server.py"), "--latency", str(latency)],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("serving on "):
            raise RuntimeError(f"fault server did not start: {line!r}")
        yield line.split()[-1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run(n: int, concurrencies: list[int], latency: float, repeats: int, in_process: bool = False) -> list[dict]:
    rows = []
    with fault_server(latency, in_process) as base_url, tempfile.TemporaryDirectory() as tmp:
        def teacher(c: int, tag: str) -> Teacher:
            config = TeacherConfig(backend="openai", model="bench", base_url=base_url, max_concurrency=c,
                                   api_key_env="CITING_BENCH_NO_KEY", timeout=30)
            return Teacher(config, cache_path=Path(tmp) / f"{tag}.jsonl")

        teacher(1, "warmup").complete([[{"role": "user", "content": "warm up"}]], desc="warm-up")  # imports
        for c in concurrencies:
            walls = []
            for r in range(repeats):
                requests = [[{"role": "user", "content": f"bench c={c} r={r} question {i}"}] for i in range(n)]
                t = teacher(c, f"c{c}-r{r}")
                start = time.perf_counter()
                t.complete(requests, desc=f"C={c}")
                walls.append(time.perf_counter() - start)
                assert t.ledger.completed == n and t.ledger.failures == 0
            wall = min(walls)
            ideal = n / c * latency
            rows.append({"n": n, "concurrency": c, "latency_s": latency, "wall_s": round(wall, 3),
                         "ideal_s": round(ideal, 3), "ratio": round(wall / ideal, 3),
                         "requests_per_s": round(n / wall, 1), "repeats": repeats})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="requests per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--latency", type=float, default=0.2, help="server answer latency in seconds")
    parser.add_argument("--repeats", type=int, default=1, help="measurements per concurrency (the best is kept)")
    parser.add_argument("--in-process", action="store_true", help="run the server in this process (shares the GIL)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    rows = run(args.n, args.concurrency, args.latency, args.repeats, args.in_process)

    from rich.console import Console
    from rich.table import Table

    where = "in-process" if args.in_process else "separate process"
    table = Table(title=f"Teacher client: N={args.n}, server latency {args.latency * 1000:.0f} ms ({where} server)")
    for col in ("concurrency", "wall s", "ideal N/C x latency s", "ratio", "requests/s"):
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(str(row["concurrency"]), f"{row['wall_s']:.2f}", f"{row['ideal_s']:.2f}",
                      f"{row['ratio']:.3f}", f"{row['requests_per_s']:.1f}")
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
