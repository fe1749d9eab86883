"""Per-rank peak memory and step time of DDP vs DeepSpeed ZeRO-2 vs ZeRO-3 vs FSDP2 on the same job, side by side.

    python bench/bench_engines.py [--steps 6] [--json out.json]

The job (bench/_engine_job.py): LoRA r16 (q/k/v/o) SFT of a random Llama (hidden 768, 8 layers, ~57M parameters,
fp32), batch 2 x 256 tokens per rank, launched with two gloo CPU ranks under the project's own
accelerate_configs/cpu_2proc.yaml, zero2.yaml, zero3.yaml and fsdp.yaml (only --num_processes 2 --mixed_precision no
overridden). FSDP goes through tests/helpers/force_fsdp.py, since accelerate enables FSDP only on GPUs. Reported per
engine: each rank's peak RSS (getrusage), the median step time after the first step, and both as ratios to DDP.
On a CPU box RSS includes the Python/torch runtime of every rank, so the ratios understate what sharding saves on a
GPU, where only the weights, gradients and optimizer state count. No thresholds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.engines import EXPECTED_TYPE, launch  # noqa: E402

ENGINES = ("ddp", "zero2", "zero3", "fsdp")


def build_model(folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from citing_trl.models import build_tiny_model

    tiny = build_tiny_model(folder / "tiny")
    target = folder / "bench-llama"
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=768, intermediate_size=2048, num_hidden_layers=8,
                         num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        model = build_model(Path(tmp))
        import importlib.util

        has_deepspeed = importlib.util.find_spec("deepspeed") is not None
        for engine in args.engines:
            if engine.startswith("zero") and not has_deepspeed:
                print(f"{engine}: skipped, deepspeed is not installed (make setup installs it)", flush=True)
                continue
            out = Path(tmp) / engine
            out.mkdir()
            start = time.perf_counter()
            run = launch(REPO / "bench" / "_engine_job.py", engine, model, out, args.steps)
            wall = time.perf_counter() - start
            ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
            assert all(r["engine"]["distributed_type"] == EXPECTED_TYPE[engine] for r in ranks), ranks
            rows.append({"engine": engine, "distributed_type": ranks[0]["engine"]["distributed_type"],
                         "sharded_parameters": ranks[0]["engine"].get("parameters_partitioned"),
                         "peak_rss_gib_per_rank": [round(r["peak_rss_bytes"] / 2**30, 3) for r in ranks],
                         "median_step_s": round(statistics.median(t for r in ranks for t in r["step_s"][1:]), 4),
                         "launch_wall_s": round(wall, 1)})
            print(f"{engine}: {rows[-1]}", flush=True)
            del run
    base = next((r for r in rows if r["engine"] == "ddp"), rows[0])
    for r in rows:
        r["rss_ratio"] = round(max(r["peak_rss_gib_per_rank"]) / max(base["peak_rss_gib_per_rank"]), 3)
        r["step_ratio"] = round(r["median_step_s"] / base["median_step_s"], 3)
    print("| engine | accelerate reports | params sharded | peak RSS per rank (GiB) | vs DDP | median step | vs DDP |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['distributed_type']} | {r['sharded_parameters']} | "
              f"{' / '.join(f'{x:.2f}' for x in r['peak_rss_gib_per_rank'])} | {r['rss_ratio']:.2f}x | "
              f"{r['median_step_s']:.3f} s | {r['step_ratio']:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
