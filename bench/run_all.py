"""Every benchmark in bench/, one process tree, one table.

    python bench/run_all.py                 # what `make bench` runs
    python bench/run_all.py --only rollouts teacher --lock /tmp/citing-heavy.lock
    python bench/run_all.py --quick         # tiny model, small sizes: checks the harness in seconds

Each benchmark runs as a child process (through bench/_peak.py) and writes its figures as JSON; this
script reads them, takes each child's peak RSS from wait4() (the child and everything it waited for, e.g.
the demo's recipe process; a server child it only terminates is not counted) and, on a GPU, its peak
torch-allocated memory, and prints one table: figures and the ratios that each benchmark measured side by
side in its own run. Results go to bench/results/latest.{json,md} (docs/scale.md quotes the .md) together with
the machine they came from. With --lock, each benchmark holds that flock while it runs (shared machines).
No thresholds: nothing here passes or fails on a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"


# ------------------------------------------------------------------------------------------------
# benchmarks: name -> (title, script, args, quick args, rows(json) -> [(measurement, figure, ratio)])
# ------------------------------------------------------------------------------------------------


def rollout_rows(d: dict) -> list[tuple[str, str, str]]:
    rows = []
    for r in d["rows"]:
        if r["kind"] == "naive loop":
            rows.append((f"naive loop, {r['threads']} threads", f"{r['tok_s']:.1f} tok/s ({r['tok_per_cpu_s']:.1f}/CPU-s)",
                         "1.00x"))
        else:
            rows.append((f"generate(), batch {r['batch_size']}, {r['threads']} threads",
                         f"{r['tok_s']:.1f} tok/s ({r['tok_per_cpu_s']:.1f}/CPU-s, {r['useful_slot_share']:.0%} "
                         "useful slots)", f"{r['ratio']:.2f}x (CPU {r['cpu_ratio']:.2f}x)"))
    return rows


def trainer_rows(d: dict) -> list[tuple[str, str, str]]:
    return [("SFTTrainer", f"{d['sft_s_per_step']:.3f} s/step", "1.00x"),
            ("CitingTrainer", f"{d['citing_s_per_step']:.3f} s/step", f"{d['ratio']:.3f}x")]


def teacher_rows(d: list) -> list[tuple[str, str, str]]:
    return [(f"{r['n']} requests, concurrency {r['concurrency']}, {r['latency_s'] * 1000:.0f} ms server",
             f"{r['wall_s']:.2f} s vs ideal {r['ideal_s']:.2f} s", f"{r['ratio']:.3f}x ideal") for r in d]


def matching_rows(d: dict) -> list[tuple[str, str, str]]:
    best = max(d["embedding"], key=lambda e: e["per_second"])
    cmp = d["scoring_comparison"]
    return [(f"embed {d['instructions']} instructions (Eq. 1), batch {best['encode_batch_size']}",
             f"{best['per_second']:,.0f} /s", ""),
            ("match (Eq. 2 + argmax)", f"{d['matching']['per_second']:,.0f} /s", ""),
            (f"Eq. 2 scores, {cmp['instructions']} instructions: naive loop vs matrix",
             f"{cmp['naive_loop_s'] * 1000:.1f} ms vs {cmp['category_mean_matrix_s'] * 1000:.2f} ms",
             f"{cmp['naive_over_category_mean']:,.0f}x")]


def judge_rows(d: dict) -> list[tuple[str, str, str]]:
    return [(f"joint prompt ({d['source']})", f"{d['joint']:.2f} calls/pair", "1.00x"),
            (f"per-aspect prompts ({d['aspects']} aspects)", f"{d['per_aspect']:.2f} calls/pair", f"{d['ratio']:.2f}x")]


def demo_rows(d: dict) -> list[tuple[str, str, str]]:
    """One row per stage: its time, share of the wall, and its own peak memory (memory.json of the run)."""
    wall = d["process_wall_s"]
    memory = d.get("memory", {}).get("stages", {})

    def figure(name: str, value: float) -> str:
        mem = memory.get(name.removesuffix("_s"), {})
        text = f"{value:.1f} s"
        if mem.get("rss_peak_bytes") is not None:
            text += f", peak {mem['rss_peak_bytes'] / 2**30:.2f} GiB RSS"
        if mem.get("gpu_allocated_peak_bytes") is not None:
            text += (f", GPU {mem['gpu_allocated_peak_bytes'] / 2**30:.2f} GiB allocated / "
                     f"{mem['gpu_reserved_peak_bytes'] / 2**30:.2f} reserved")
        return text

    rows = [(name, figure(name, value), f"{value / wall:.0%} of wall") for name, value in d["stages"].items()
            if value is not None and name != "last_run_total_s"]
    rows.append(("demo process wall", f"{wall:.1f} s", ""))
    return rows


def engine_rows(d: dict) -> list[tuple[str, str, str]]:
    return [(f"{r['engine']} ({r['distributed_type']}{', sharded' if r['sharded_parameters'] else ''})",
             f"{' / '.join(f'{x:.2f}' for x in r['peak_rss_gib_per_rank'])} GiB peak RSS per rank, "
             f"{r['median_step_s']:.3f} s/step", f"RSS {r['rss_ratio']:.2f}x, step {r['step_ratio']:.2f}x")
            for r in d["rows"]]


def gen_engine_rows(d: dict) -> list[tuple[str, str, str]]:
    """tok/s against the naive loop; start-up and peak memory of each case's own process tree apart."""
    rows = []
    for r in d["rows"]:
        if r.get("error"):
            rows.append((r["what"], f"failed: {r['error'][:60]}", ""))
            continue
        figure = (f"{r['tok_s']:.1f} tok/s; start-up {r['startup_s']:.0f} s; peak {r['peak_rss_gib']:.2f} GiB RSS"
                  + (f"; greedy = HF fp32 on {r['equal_rows']} rows" if r.get("equal_rows") else ""))
        rows.append((r["what"], figure, f"{r['ratio']:.2f}x" if r.get("ratio") else ""))
        if r.get("adapter_tok_s"):
            what = "  same engine, LoRA adapter " + ("as LoRA request" if r["case"].endswith("lora") else
                                                      "merged + reloaded (first call)")
            rows.append((what, f"{r['adapter_tok_s']:.1f} tok/s", f"{r['adapter_tok_s'] / d['rows'][0]['tok_s']:.2f}x"
                         if d["rows"][0].get("tok_s") else ""))
        if r.get("adapter_again_tok_s"):
            rows.append(("  same engine, merged adapter again (no reload)", f"{r['adapter_again_tok_s']:.1f} tok/s",
                         f"{r['adapter_again_tok_s'] / d['rows'][0]['tok_s']:.2f}x" if d["rows"][0].get("tok_s") else ""))
    return rows


BENCHMARKS = {
    "rollouts": ("generator vs naive loop (SmolLM2-135M, 12 prompts x 32 new tokens, greedy)", "bench_rollouts.py",
                 ["--prompts", "12", "--max-new-tokens", "32", "--batch-sizes", "1", "4", "12", "--threads", "2", "1"],
                 ["--prompts", "4", "--max-new-tokens", "4", "--batch-sizes", "2"], rollout_rows),
    "gen_engines": ("generation engines: HF vs vLLM (CPU build here), fp32/bf16, vs naive loop (SmolLM2-135M, 16 demo "
                "prompts x 64 new tokens, greedy; each case in its own process)", "bench_gen_engines.py", [],
                ["--prompts", "2", "--max-new-tokens", "4", "--cases", "naive", "hf_fp32"], gen_engine_rows),
    "trainer": ("CitingTrainer vs SFTTrainer (SmolLM2-135M + LoRA r16, batch 4)", "bench_trainer.py", ["--steps", "4"],
                ["--steps", "2", "--batch-size", "1"], trainer_rows),
    "teacher": ("teacher client vs ideal concurrency (loopback server)", "bench_teacher.py", [],
                ["--n", "8", "--concurrency", "1", "4", "--latency", "0.02"], teacher_rows),
    "matching": ("rubric matching throughput (all-MiniLM-L6-v2)", "bench_matching.py", ["--n", "5000"],
                 ["--n", "200", "--naive_n", "50"], matching_rows),
    "judge": ("judge calls per pair (both orders)", "bench_judge.py", [], [], judge_rows),
    "engines": ("DDP vs ZeRO-2 vs ZeRO-3 vs FSDP2, 2 gloo ranks (random Llama 57M + LoRA r16, batch 2 x 256)",
                "bench_engines.py", ["--steps", "6"], ["--steps", "2", "--engines", "ddp", "zero2"], engine_rows),
    # the demo config, cut to 1 round over 12 instructions and 6 optimizer steps per training stage so that
    # it stays a few minutes on a 2-core CPU (the full `make demo` takes ~12 min there)
    "demo": ("demo stage times and peak memory (demo config, 1 round, 12 instructions, 6 steps per stage)",
             "bench_demo.py",
             ["--num_rounds", "1", "--num_instructions", "12", "--max_steps", "6"], None, demo_rows),
}


def machine() -> dict:
    info = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        info["memory_gib"] = round(kb / 2**20, 1)
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except ImportError:
        info["gpu"] = None
    info["load_average_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


@contextlib.contextmanager
def locked(path: str | None):
    if not path:
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_one(name: str, quick: bool, model: str | None, lock: str | None, tmp: Path) -> dict:
    title, script, args, quick_args, to_rows = BENCHMARKS[name]
    out_json, gpu_json = tmp / f"{name}.json", tmp / f"{name}.gpu.json"
    argv = list(quick_args if quick else args)
    if model and name in ("rollouts", "trainer"):
        argv += ["--model", model]
    cmd = [sys.executable, str(BENCH / "_peak.py"), str(BENCH / script), *argv, "--json", str(out_json)]
    env = {**os.environ, "CITING_BENCH_GPU_OUT": str(gpu_json),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with locked(lock):
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
    result = {"name": name, "title": title, "command": " ".join(["python", f"bench/{script}", *argv]),
              "wall_s": round(wall, 1), "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2), "returncode": proc.returncode}
    if gpu_json.exists():
        gpu = json.loads(gpu_json.read_text())
        result["peak_gpu_gib"] = round(gpu["gpu_peak_bytes"] / 2**30, 2)
    if proc.returncode != 0 or not out_json.exists():
        result["error"] = log.strip().splitlines()[-1] if log.strip() else f"exit {proc.returncode}"
        result["rows"] = []
        print(log[-3000:], file=sys.stderr)
        return result
    result["data"] = json.loads(out_json.read_text())
    result["rows"] = [list(r) for r in to_rows(result["data"])]
    return result


def markdown(results: list[dict], info: dict, quick: bool) -> str:
    lines = [f"Measured {info['date']} on {info.get('cpu', '?')} ({info['cpus']} CPUs, {info.get('memory_gib', '?')} GiB"
             f", GPU: {info.get('gpu') or 'none'}; torch {info.get('torch', '?')}; load average at start "
             f"{info['load_average_start'][0]}){' [--quick]' if quick else ''}. Timings depend on what else the machine "
             "runs (see the load average); ratios were measured side by side within each benchmark.", "",
             "| benchmark | measurement | figure | ratio | peak RSS | peak GPU | bench wall |",
             "|---|---|---|---|---|---|---|"]
    for res in results:
        mem = f"{res['peak_rss_gib']:.2f} GiB"
        gpu = f"{res['peak_gpu_gib']:.2f} GiB" if "peak_gpu_gib" in res else "n/a"
        if res.get("error"):
            lines.append(f"| {res['title']} | failed: {res['error'][:80]} | | | {mem} | {gpu} | {res['wall_s']:.0f} s |")
        for i, (what, figure, ratio) in enumerate(res["rows"]):
            first = i == 0
            lines.append(f"| {res['title'] if first else ''} | {what} | {figure} | {ratio} | {mem if first else ''} | "
                         f"{gpu if first else ''} | {str(res['wall_s']) + ' s' if first else ''} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=None)
    ap.add_argument("--skip", nargs="+", choices=list(BENCHMARKS), default=[])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (and --model), skips the demo")
    ap.add_argument("--model", default=None, help="student for rollouts/trainer (default: embedded SmolLM2)")
    ap.add_argument("--lock", default=None, help="flock file held while each benchmark runs")
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    ap.add_argument("--combine", type=Path, nargs="+", default=None,
                    help="no run: join the latest.json of earlier partial runs (e.g. light benchmarks unlocked, "
                         "heavy ones in one locked slot) into one table, in benchmark order")
    a = ap.parse_args()
    if a.combine:
        parts = [json.loads((d / "latest.json").read_text()) for d in a.combine]
        by_name = {r["name"]: r for part in parts for r in part["results"]}
        results = [by_name[n] for n in BENCHMARKS if n in by_name]
        info = dict(parts[0]["machine"])
        info["date"] = " / ".join(sorted({p["machine"]["date"] for p in parts}))
        info["load_average_start"] = [max(p["machine"]["load_average_start"][0] for p in parts)]
        write(results, info, any(p["quick"] for p in parts), a.out)
        return
    names = [n for n in (a.only or BENCHMARKS) if n not in a.skip and not (a.quick and BENCHMARKS[n][3] is None)]
    info = machine()
    info["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            print(f"== {name}: {BENCHMARKS[name][0]}", flush=True)
            results.append(run_one(name, a.quick, a.model, a.lock, Path(tmp)))
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    write(results, info, a.quick, a.out)
    if any(r.get("error") for r in results):
        sys.exit(1)


def write(results: list[dict], info: dict, quick: bool, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"citing-trl benchmarks{' [--quick: tiny sizes]' if quick else ''} ({info.get('cpu', '?')}, {info['cpus']} CPUs, GPU: "
                        f"{info.get('gpu') or 'none'}; shared machine)")
    for col in ("benchmark", "measurement", "figure", "ratio", "peak RSS", "peak GPU", "wall"):
        table.add_column(col, justify="right" if col in ("ratio", "peak RSS", "peak GPU", "wall") else "left")
    for res in results:
        mem = f"{res['peak_rss_gib']:.2f} GiB"
        gpu = f"{res['peak_gpu_gib']:.2f} GiB" if "peak_gpu_gib" in res else "n/a"
        if res.get("error"):
            table.add_row(res["name"], f"[red]failed: {res['error'][:60]}", "", "", mem, gpu, f"{res['wall_s']:.0f} s")
        for i, (what, figure, ratio) in enumerate(res["rows"]):
            table.add_row(res["name"] if i == 0 else "", what, figure, ratio, mem if i == 0 else "",
                          gpu if i == 0 else "", f"{res['wall_s']:.0f} s" if i == 0 else "")
    Console(width=200).print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps({"machine": info, "quick": quick, "results": results}, indent=2) + "\n")
    (out / "latest.md").write_text(markdown(results, info, quick))
    print(f"wrote {out / 'latest.md'} and latest.json")


if __name__ == "__main__":
    main()
