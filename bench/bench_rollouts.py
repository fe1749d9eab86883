"""Rollout throughput: the project's generation routine (batched, length-sorted, left padding) vs a naive
loop that calls `generate` one prompt at a time, on SmolLM2-135M-Instruct, same prompts, same budget.

    python bench/bench_rollouts.py [--prompts 32] [--max-new-tokens 64] [--batch-size 8]
Prints tokens/s of each and their ratio, measured side by side in one run.
"""

import argparse
import time

import torch

from citing_trl.data import load_demo
from citing_trl.generation import GenerationConfig, generate
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--model", default="embedded")
    a = ap.parse_args()
    model, tok = load_model(a.model)
    rows = load_demo().select(range(a.prompts))
    prompts = [instruction_messages(r["instruction"], r["input"]) for r in rows]
    generate(model, tok, prompts[:2], GenerationConfig(max_new_tokens=4, show_progress=False))  # warm-up

    t0 = time.perf_counter()
    n_naive = naive(model, tok, prompts, a.max_new_tokens)
    t_naive = time.perf_counter() - t0

    t0 = time.perf_counter()
    gens = generate(model, tok, prompts, GenerationConfig(max_new_tokens=a.max_new_tokens, batch_size=a.batch_size,
                                                         show_progress=False))
    t_ours = time.perf_counter() - t0
    n_ours = sum(g.completion_tokens for g in gens)

    print(f"prompts={a.prompts} max_new_tokens={a.max_new_tokens} batch_size={a.batch_size} threads={torch.get_num_threads()}")
    print(f"naive loop      : {n_naive:6d} tokens in {t_naive:7.1f} s = {n_naive / t_naive:7.1f} tok/s")
    print(f"citing_trl.generate: {n_ours:6d} tokens in {t_ours:7.1f} s = {n_ours / t_ours:7.1f} tok/s")
    print(f"speed-up (tok/s ratio): {(n_ours / t_ours) / (n_naive / t_naive):.2f}x")


if __name__ == "__main__":
    main()
