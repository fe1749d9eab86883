"""LoRA SFT throughput and MFU on a LLaMA-7B-shaped model (random weights): SFTTrainer vs CitingTrainer, and
packing / padding-free, side by side in one process.

    python bench/bench_gpu_sft.py                                  # GPU: LLaMA-7B shape, bf16, seq 512
    python bench/bench_gpu_sft.py --modes sft citing sft_packing sft_padding_free --batch-size 8 --steps 12
    python bench/bench_gpu_sft.py --shape tiny --device cpu --dtype float32 --steps 2   # harness check on CPU

The model is ``LlamaConfig`` with LLaMA-7B's shape (hidden 4096, 32 layers, 32 heads, MLP 11008) and the
student tokenizer's vocabulary (SmolLM2: 49,152 tokens, so the model has ~6.9B parameters instead of 6.7B),
random weights in ``--dtype``; LoRA r16 on q/k/v/o as in the recipes. The rows are CITING revision rows built
from the demo data (prompt pr(x, c, r(k)), completion r(k+1)), the same rows for every mode.

Modes:
- ``sft``: TRL ``SFTTrainer`` on the prompt/completion rows that CitingTrainer builds (loss on the completion).
- ``citing``: ``CitingTrainer`` on the revision rows (it builds those rows itself; the step is SFTTrainer's).
- ``sft_packing``: ``SFTTrainer`` with ``packing=True`` (rows concatenated to ``max_length``; BFD).
- ``sft_padding_free``: ``SFTTrainer`` with ``padding_free=True`` (needs a flash-attention implementation;
  reported as failed otherwise).

Figures per mode, over the steps after ``--warmup``: seconds per step, trained tokens per second (non-pad
tokens the model saw, from the Trainer's ``num_input_tokens_seen``), peak GPU memory, and MFU. MFU counts
the FLOPs a LoRA step must do: forward 2N per token plus the input-gradient backward 2N per token (frozen
weights get no weight gradient; the LoRA matrices add < 0.2%), plus attention 2 x 2 x L x seq x d per token
forward and twice that backward, over the device's dense peak (``--peak-tflops``; H100 SXM bf16 989, H200 989,
A100 312, RTX 3090 71). Full-fine-tuning MFU (6N) would read 1.5x higher for the same speed.
No thresholds: this prints figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {
    "llama-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4),
}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "3090": 71.0, "A10": 125.0, "L4": 121.0}
MODES = ("sft", "citing", "sft_packing", "sft_padding_free")


def peak_tflops(device_name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((v for k, v in PEAK_TFLOPS.items() if k in device_name), None)


def flops_per_token(n_params: int, layers: int, hidden: int, seq: int) -> float:
    """LoRA training FLOPs per token: 4N for the matmuls (forward + input gradients) and attention's
    QK^T and AV (2 matmuls x 2 FLOPs x seq x hidden per layer forward, 2x that backward)."""
    return 4 * n_params + 3 * (2 * 2 * layers * seq * hidden)


def revision_rows(n: int, seq: int):
    from bench_trainer import revision_rows as demo_revision_rows

    # long criteria, so that most rows reach a few hundred tokens, as CITING rows with rubric criteria do
    return demo_revision_rows(n, "\n".join(f"- Criterion {j}: the answer is accurate, complete and clear."
                                           for j in range(max(1, seq // 64))))


def run_mode(mode: str, args, tok, rows, device: str):
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, LlamaConfig, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from citing_trl.citing_trainer import CitingConfig, CitingTrainer, build_citing_dataset
    from citing_trl.models import resolve_dtype

    dtype = resolve_dtype(args.dtype)
    cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=max(2048, args.seq_len), **SHAPES[args.shape],
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    attn = "flash_attention_2" if mode == "sft_padding_free" and device == "cuda" else "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=dtype, attn_implementation=attn)
    n_params = sum(p.numel() for p in model.parameters())
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    class Timer(TrainerCallback):
        def __init__(self):
            self.marks = []

        def on_step_end(self, a, state, control, **kw):
            if device == "cuda":
                torch.cuda.synchronize()
            self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

    timer = Timer()
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      task_type="CAUSAL_LM")
    common = dict(output_dir=tempfile.mkdtemp(), use_cpu=device == "cpu", bf16=args.dtype == "bfloat16",
                  report_to="none", max_steps=args.warmup + args.steps, per_device_train_batch_size=args.batch_size,
                  save_strategy="no", gradient_checkpointing=args.gradient_checkpointing, max_length=args.seq_len,
                  logging_steps=10_000, seed=0, include_num_input_tokens_seen="non_padding",
                  learning_rate=1e-5, dataloader_num_workers=0)
    if mode == "citing":
        trainer = CitingTrainer(model=model, args=CitingConfig(**common), revision_dataset=rows, processing_class=tok,
                                peft_config=lora, callbacks=[timer])
    else:
        extra = {"packing": mode == "sft_packing", "padding_free": mode == "sft_padding_free"}
        if mode == "sft_padding_free":  # TRL: padding-free without packing does not truncate; rows are short here
            extra["max_length"] = None
        trainer = SFTTrainer(model=model, args=SFTConfig(**{**common, **extra}, completion_only_loss=True),
                             train_dataset=build_citing_dataset(rows), processing_class=tok, peft_config=lora,
                             callbacks=[timer])
    trainer.train()
    (t0, tok0), (t1, tok1) = timer.marks[args.warmup - 1], timer.marks[-1]  # from the end of the last warmup step
    steps = len(timer.marks) - args.warmup
    seconds = t1 - t0
    tokens = int(tok1) - int(tok0)
    out = {"mode": mode, "attn_implementation": attn, "params": n_params, "steps_measured": steps,
           "s_per_step": seconds / steps if steps else None, "tokens_per_s": tokens / seconds if seconds else None,
           "tokens_per_step": tokens / steps if steps else None}
    if device == "cuda":
        out["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    peak = peak_tflops(args.device_name, args.peak_tflops)
    if peak and out["tokens_per_s"]:
        achieved = out["tokens_per_s"] * flops_per_token(n_params, cfg.num_hidden_layers, cfg.hidden_size, args.seq_len)
        out["tflops"] = achieved / 1e12
        out["mfu"] = achieved / (peak * 1e12)
    del trainer, model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=list(SHAPES), default="llama-7b")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8, help="measured steps, after --warmup")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device dense peak for MFU (default: by name)")
    ap.add_argument("--tokenizer", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.warmup < 1:
        ap.error("--warmup must be >= 1 (the first step includes lazy initialisation)")

    import torch

    from citing_trl.models import load_student_tokenizer

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.device_name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    tok = load_student_tokenizer(args.tokenizer)
    rows = revision_rows(args.batch_size * (args.warmup + args.steps) * 2, args.seq_len)
    results = []
    for mode in args.modes:
        try:
            results.append(run_mode(mode, args, tok, rows, device))
        except Exception as err:  # one mode failing (e.g. no flash-attention) must not hide the others
            results.append({"mode": mode, "error": f"{type(err).__name__}: {err}"[:300]})
            if device == "cuda":
                torch.cuda.empty_cache()
        print(json.dumps(results[-1]), flush=True)
    base = next((r for r in results if r["mode"] == "sft" and r.get("tokens_per_s")), None)
    print(f"\n{args.shape}, seq {args.seq_len}, batch {args.batch_size}, {args.dtype}, {args.device_name}")
    print(f"{'mode':>18} {'s/step':>8} {'tok/s':>9} {'vs sft':>7} {'MFU':>6} {'peak GPU':>9}")
    for r in results:
        if "error" in r:
            print(f"{r['mode']:>18} failed: {r['error']}")
            continue
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base else ""
        mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "n/a"
        gpu = f"{r['peak_gpu_gib']:.1f} GiB" if "peak_gpu_gib" in r else "n/a"
        print(f"{r['mode']:>18} {r['s_per_step']:>8.3f} {r['tokens_per_s']:>9.0f} {ratio:>7} {mfu:>6} {gpu:>9}")
    if args.json:
        Path(args.json).write_text(json.dumps({"shape": args.shape, "seq_len": args.seq_len,
                                               "batch_size": args.batch_size, "dtype": args.dtype,
                                               "device": args.device_name, "results": results}, indent=2))


if __name__ == "__main__":
    main()
