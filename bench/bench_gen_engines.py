"""Generation engines side by side: the project's generate() on HF (fp32, bf16) and vLLM (fp32, bf16) against a
naive loop (HF generate, one prompt at a time, fp32), same prompts and budget, greedy; plus the two ways an
adapter reaches vLLM (a LoRA request per call, or the adapter merged and reloaded into the running engine).

    python bench/bench_gen_engines.py [--prompts 16] [--max-new-tokens 64] [--json out.json]

Every case runs in its own child process, so start-up (model load; for vLLM engine start and compilation)
and peak memory (resident memory of the child and all its processes, sampled every 0.2 s) are its own and
reported apart from tokens/s. Also counted: rows whose greedy tokens equal HF fp32's, token for token.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

CASES = {
    "naive": "naive loop, HF fp32, one prompt at a time",
    "hf_fp32": "generate(), HF fp32, batch 16",
    "hf_bf16": "generate(), HF bf16, batch 16",
    "vllm_fp32": "generate(), vLLM fp32 (compiled)",
    "vllm_bf16": "generate(), vLLM bf16 (compiled)",
    "vllm_fp32_lora": "generate(), vLLM fp32, adapter as LoRA request (enable_lora: eager)",
}


def prompts(n: int) -> list:
    from citing_trl.data import load_demo
    from citing_trl.prompts import instruction_messages

    rows = load_demo().select(range(n))
    return [instruction_messages(r["instruction"], r["input"]) for r in rows]


def adapter(model):
    """A LoRA adapter with small random B (an untrained adapter changes nothing)."""
    import torch
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return peft_model


def run_case(case: str, n: int, max_new: int) -> dict:
    import torch

    from citing_trl.generation import DecodingConfig, generate, vllm_engine
    from citing_trl.models import load_model

    dtype = "bfloat16" if case.endswith("bf16") else "float32"
    ps = prompts(n)
    t0 = time.perf_counter()
    model, tok = load_model("embedded", dtype=dtype)
    out: dict = {}
    if case == "naive":
        start = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = []
        for p in ps:
            ids = tok.apply_chat_template(p, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            with torch.no_grad():
                new = model.generate(**ids, max_new_tokens=max_new, do_sample=False,
                                     pad_token_id=tok.pad_token_id)[0, ids["input_ids"].shape[1]:].tolist()
            rows.append(new[: new.index(tok.eos_token_id)] if tok.eos_token_id in new else new)
        secs = time.perf_counter() - t0
        return {"startup_s": start, "tokens": sum(map(len, rows)), "seconds": secs, "rows": rows}
    backend = "vllm" if case.startswith("vllm") else "transformers"
    mode = "lora" if case.endswith("lora") else "merge"
    config = DecodingConfig(backend=backend, max_new_tokens=max_new, batch_size=16, show_progress=False,
                              vllm_adapter_mode=mode, vllm_enforce_eager=mode == "lora")
    if backend == "vllm":
        from citing_trl.models import resolve_model_path

        engine = vllm_engine(resolve_model_path("embedded"), adapter_mode=mode, dtype=dtype,
                             enforce_eager=mode == "lora")
        out["engine"] = type(engine.llm).__module__ + "." + type(engine.llm).__name__
    generate(model, tok, ps[:2], DecodingConfig(**{**config.__dict__, "max_new_tokens": 4}))  # warm-up
    start = time.perf_counter() - t0

    def timed(m):
        t = time.perf_counter()
        gens = generate(m, tok, ps, config)
        return gens, time.perf_counter() - t

    gens, secs = timed(model)
    out.update(startup_s=start, tokens=sum(g.completion_tokens for g in gens), seconds=secs,
               rows=[g.token_ids[: g.completion_tokens] for g in gens])
    if backend == "vllm" and dtype == "float32":  # the adapter paths (fp32, so outputs can be compared)
        peft_model = adapter(model)
        gens, secs = timed(peft_model)  # merge mode: includes folding the adapter in and reloading the engine
        out.update(adapter_tokens=sum(g.completion_tokens for g in gens), adapter_seconds=secs,
                   adapter_rows=[g.token_ids[: g.completion_tokens] for g in gens])
        if mode == "merge":
            gens, secs = timed(peft_model)  # same adapter again: no reload
            out.update(adapter_again_seconds=secs)
    return out


def sample_rss(pid: int, peak: list, stop: threading.Event) -> None:
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.is_set():
        total = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            break
        peak[0] = max(peak[0], total)
        stop.wait(0.2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.case:
        a.out.write_text(json.dumps(run_case(a.case, a.prompts, a.max_new_tokens)))
        return
    env = {**os.environ}
    env.setdefault("VLLM_USE_AOT_COMPILE", "0")  # the CPU build's compile cache does not reload (NOTES.md)
    results = {}
    for case in a.cases:
        out = Path(f"/tmp/bench_gen_engines_{os.getpid()}_{case}.json")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, __file__, "--case", case, "--out", str(out), "--prompts",
                                 str(a.prompts), "--max-new-tokens", str(a.max_new_tokens)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peak, stop = [0], threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(proc.pid, peak, stop), daemon=True)
        sampler.start()
        _, err = proc.communicate()
        stop.set()
        sampler.join()
        if proc.returncode != 0 or not out.exists():
            results[case] = {"error": (err.strip().splitlines() or ["?"])[-1]}
            print(f"{case}: failed: {results[case]['error']}\n{err[-2000:]}", file=sys.stderr)
            continue
        r = json.loads(out.read_text())
        out.unlink()
        r.update(peak_rss_gib=round(peak[0] / 2**30, 2), wall_s=round(time.perf_counter() - t0, 1),
                 tok_s=round(r["tokens"] / r["seconds"], 1))
        results[case] = r
    ref = results.get("hf_fp32", {}).get("rows")
    base = results.get("naive", {}).get("tok_s")
    rows = []
    for case, r in results.items():
        if "error" in r:
            rows.append({"case": case, "what": CASES[case], "error": r["error"]})
            continue
        row = {"case": case, "what": CASES[case], "tok_s": r["tok_s"], "ratio": round(r["tok_s"] / base, 2) if base else None,
               "startup_s": round(r["startup_s"], 1), "peak_rss_gib": r["peak_rss_gib"], "engine": r.get("engine")}
        if ref:
            row["equal_rows"] = f"{sum(x == y for x, y in zip(r['rows'], ref))}/{len(ref)}"
        if "adapter_seconds" in r:
            row["adapter_tok_s"] = round(r["adapter_tokens"] / r["adapter_seconds"], 1)
            if "adapter_again_seconds" in r:
                row["adapter_again_tok_s"] = round(r["adapter_tokens"] / r["adapter_again_seconds"], 1)
            row["adapter_rows"] = r["adapter_rows"]
        rows.append(row)
    merged = next((r for r in rows if r["case"] == "vllm_fp32" and "adapter_rows" in r), None)
    lora = next((r for r in rows if r["case"] == "vllm_fp32_lora" and "adapter_rows" in r), None)
    if merged and lora:
        merged["adapter_rows_equal_to_lora"] = lora["adapter_rows_equal_to_merge"] = (
            f"{sum(x == y for x, y in zip(merged['adapter_rows'], lora['adapter_rows']))}/{len(lora['adapter_rows'])}")
    for r in rows:
        r.pop("adapter_rows", None)
    print(f"prompts={a.prompts} max_new_tokens={a.max_new_tokens}")
    for r in rows:
        print(json.dumps(r))
    if a.json:
        a.json.write_text(json.dumps({"prompts": a.prompts, "max_new_tokens": a.max_new_tokens, "rows": rows}))


if __name__ == "__main__":
    main()
