"""Wall time of the embedded-default CITING demo, per stage (SFT, rubric, matching, and per round: student
rollouts, teacher revisions, training), read from the run's own timings.json.

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
    print(f"{'stage':32s} {'seconds':>8s} {'share':>6s}")
    for name, value in timings.items():
        if name == "last_run_total_s" or value is None:
            continue
        print(f"{name:32s} {value:8.1f} {value / wall:6.1%}")
    print(f"{'pipeline total':32s} {timings['last_run_total_s']:8.1f}")
    print(f"{'process wall (imports, loading)':32s} {wall:8.1f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"stages": timings, "process_wall_s": wall}, indent=2) + "\n")


if __name__ == "__main__":
    main()
