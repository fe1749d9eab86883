"""Run a benchmark script as __main__ and, at exit, write its peak GPU memory (torch's allocator) to the file
named by $CITING_BENCH_GPU_OUT. Used by bench/run_all.py; peak RSS comes from the parent's wait4()."""

import atexit
import json
import os
import runpy
import sys


def _report() -> None:
    out = os.environ.get("CITING_BENCH_GPU_OUT")
    if not out or "torch" not in sys.modules:
        return
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        with open(out, "w") as fh:
            json.dump({"gpu_peak_bytes": torch.cuda.max_memory_allocated(), "gpu": torch.cuda.get_device_name()}, fh)


if __name__ == "__main__":
    atexit.register(_report)
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
