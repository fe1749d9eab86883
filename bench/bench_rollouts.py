"""Rollout throughput: the project's generation routine (batched, length-sorted, left padding) vs a naive
loop that calls `generate` one prompt at a time, on SmolLM2-135M-Instruct, same prompts, same budget.

    python bench/bench_rollouts.py [--prompts 32] [--max-new-tokens 64] [--batch-sizes 8] [--threads 2]
    python bench/bench_rollouts.py --batch-sizes 1 4 8 16 32 --threads 1 2   # what limits the ratio

Prints tokens/s of each and their ratio, measured side by side in one run, plus tokens per second of this
process's CPU time (less sensitive to other jobs on a shared machine than wall time). For every batched setting it
also prints where the batched work goes: the share of computed token slots that were useful (a row that
has reached EOS keeps being computed until the longest row of its batch finishes), the share of prompt
padding, and the tokens/s of the same forward passes counted over all slots.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from citing_trl.data import load_demo
from citing_trl.generation import DecodingConfig, generate
from citing_trl.models import load_model
from citing_trl.prompts import instruction_messages


def naive(model, tok, prompts, max_new_tokens):
    tokens = 0
    for p in prompts:
        ids = tok.apply_chat_template(p, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        new = out[0, ids["input_ids"].shape[1]:].tolist()
        if tok.eos_token_id in new:
            new = new[: new.index(tok.eos_token_id)]
        tokens += len(new)
    return tokens


def batched(model, tok, prompts, max_new_tokens, batch_size):
    """generate() with per-batch accounting of computed slots vs useful tokens."""
    stats = {"slots": 0, "useful": 0, "prompt_pad": 0, "prompt_cells": 0}

    def on_batch(idx, gens):
        steps = max(g.completion_tokens + (g.finish_reason == "stop") for g in gens)  # EOS is a computed step
        stats["slots"] += steps * len(gens)
        stats["useful"] += sum(g.completion_tokens for g in gens)
        width = max(g.prompt_tokens for g in gens)
        stats["prompt_pad"] += sum(width - g.prompt_tokens for g in gens)
        stats["prompt_cells"] += width * len(gens)

    t0, c0 = time.perf_counter(), time.process_time()
    gens = generate(model, tok, prompts, DecodingConfig(max_new_tokens=max_new_tokens, batch_size=batch_size,
                                                         show_progress=False), on_batch=on_batch)
    stats["cpu_s"] = time.process_time() - c0
    secs = time.perf_counter() - t0
    return sum(g.completion_tokens for g in gens), secs, stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-sizes", "--batch-size", type=int, nargs="+", default=[8])
    ap.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    a = ap.parse_args()
    model, tok = load_model(a.model)
    rows = load_demo().select(range(a.prompts))
    prompts = [instruction_messages(r["instruction"], r["input"]) for r in rows]
    generate(model, tok, prompts[:2], DecodingConfig(max_new_tokens=4, show_progress=False))  # warm-up

    out = []
    print(f"prompts={a.prompts} max_new_tokens={a.max_new_tokens} cpus={torch.get_num_threads()}")
    print(f"{'threads':>7s} {'batch':>5s} {'tokens':>7s} {'seconds':>8s} {'tok/s':>7s} {'ratio':>6s} "
          f"{'useful slots':>12s} {'prompt pad':>10s} {'slot tok/s':>10s} {'tok/CPU-s':>9s} {'CPU ratio':>9s}")
    for threads in a.threads:
        torch.set_num_threads(threads)
        t0, c0 = time.perf_counter(), time.process_time()
        n_naive = naive(model, tok, prompts, a.max_new_tokens)
        t_naive, c_naive = time.perf_counter() - t0, time.process_time() - c0
        naive_rate, naive_cpu_rate = n_naive / t_naive, n_naive / c_naive
        out.append({"threads": threads, "batch_size": 1, "kind": "naive loop", "tokens": n_naive,
                    "seconds": round(t_naive, 2), "tok_s": round(naive_rate, 1), "ratio": 1.0,
                    "cpu_s": round(c_naive, 2), "tok_per_cpu_s": round(naive_cpu_rate, 2), "cpu_ratio": 1.0})
        print(f"{threads:7d} {'naive':>5s} {n_naive:7d} {t_naive:8.1f} {naive_rate:7.1f} {1.0:6.2f} {'':>12s} "
              f"{'':>10s} {'':>10s} {naive_cpu_rate:9.2f} {1.0:9.2f}")
        for bs in a.batch_sizes:
            n, secs, st = batched(model, tok, prompts, a.max_new_tokens, bs)
            rate = n / secs
            useful = st["useful"] / st["slots"] if st["slots"] else 0.0
            pad = st["prompt_pad"] / st["prompt_cells"] if st["prompt_cells"] else 0.0
            cpu_rate = n / st["cpu_s"]
            out.append({"threads": threads, "batch_size": bs, "kind": "citing_trl.generate", "tokens": n,
                        "seconds": round(secs, 2), "tok_s": round(rate, 1), "ratio": round(rate / naive_rate, 2),
                        "useful_slot_share": round(useful, 3), "prompt_pad_share": round(pad, 3),
                        "slot_tok_s": round(st["slots"] / secs, 1), "cpu_s": round(st["cpu_s"], 2),
                        "tok_per_cpu_s": round(cpu_rate, 2), "cpu_ratio": round(cpu_rate / naive_cpu_rate, 2)})
            print(f"{threads:7d} {bs:5d} {n:7d} {secs:8.1f} {rate:7.1f} {rate / naive_rate:6.2f} {useful:12.1%} "
                  f"{pad:10.1%} {st['slots'] / secs:10.1f} {cpu_rate:9.2f} {cpu_rate / naive_cpu_rate:9.2f}")
    best = max((r for r in out if r["kind"] != "naive loop"), key=lambda r: r["ratio"])
    print(f"best: batch {best['batch_size']}, {best['threads']} threads: {best['ratio']:.2f}x the naive loop "
          "(tok/s ratio, same threads)")
    if a.json:
        a.json.write_text(json.dumps({"prompts": a.prompts, "max_new_tokens": a.max_new_tokens, "rows": out},
                                     indent=2) + "\n")


if __name__ == "__main__":
    main()
