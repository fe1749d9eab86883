"""Wall time and peak memory of the embedded-default CITING demo, per stage (SFT, rubric, matching, and per
round: student rollouts, teacher revisions, training), read from the run's own timings.json and memory.json
(citing_trl/memory.py: peak resident memory per stage, and torch's allocated/reserved peaks on a GPU).

    python bench/bench_demo.py [--config recipes/configs/citing_demo.yaml] [--output-dir /tmp/citing_demo_bench]
The output folder is emptied first so every stage runs.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GIB = 1024**3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(REPO / "recipes" / "configs" / "citing_demo.yaml"))
    ap.add_argument("--output-dir", default="/tmp/citing_demo_bench")
    ap.add_argument("--json", default=None, help="also write the stage times here")
    a, overrides = ap.parse_known_args()  # anything else goes to the recipe, e.g. --num_rounds 1
    out = Path(a.output_dir)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "recipes" / "citing.py"), "--config", a.config, "--output_dir", str(out),
                    *overrides],
                   check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - t0
    timings = json.loads((out / "timings.json").read_text())
    memory = json.loads((out / "memory.json").read_text())
    print(f"{'stage':32s} {'seconds':>8s} {'share':>6s} {'peak RSS GiB':>12s} {'GPU alloc/rsvd GiB':>18s}")
    for name, value in timings.items():
        if name == "last_run_total_s" or value is None:
            continue
        mem = memory["stages"].get(name.removesuffix("_s"), {})
        rss, alloc, rsvd = (mem.get(k) for k in ("rss_peak_bytes", "gpu_allocated_peak_bytes", "gpu_reserved_peak_bytes"))
        gpu = "-" if alloc is None else f"{alloc / GIB:.2f} / {rsvd / GIB:.2f}"
        print(f"{name:32s} {value:8.1f} {value / wall:6.1%} {'-' if rss is None else f'{rss / GIB:.2f}':>12s} {gpu:>18s}")
    print(f"{'pipeline total':32s} {timings['last_run_total_s']:8.1f}")
    print(f"{'process wall (imports, loading)':32s} {wall:8.1f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"stages": timings, "process_wall_s": wall, "memory": memory}, indent=2) + "\n")


if __name__ == "__main__":
    main()
