"""Throughput of rubric matching (Eq. 1-2) with the built-in rubric and all-MiniLM-L6-v2.

Two costs are measured separately for N instructions (default 10,000):

* embedding (Eq. 1): sentence-BERT forward passes, ``RubricMatcher.encode``;
* matching (Eq. 2): scores for every category, arg-max and margin, from the embeddings.

and, on a smaller set (default 1,000), three ways of computing the same Eq. 2 scores from the same
embeddings: a naive Python loop (per instruction, per category, per member: one cosine), the pairwise
matrix form (all instruction-member cosines, then per-category means) and the category-mean form the
matcher uses (one (n, d) x (d, M) product). Their results are checked to agree.

Instructions: the Alpaca 4k file in ../shared/data (beside the checkout), repeated with small textual
perturbations up to N so that no text repeats; without ../shared, the shipped demo set
(citing_trl/demo_data) is used the same way. No thresholds: it prints a table (and --json writes it).

    python bench/bench_matching.py
    python bench/bench_matching.py --n 20000 --naive_n 500 --encode_batch_sizes 32 64 128 --json match.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from citing_trl.rubric import RubricMatcher, default_rubric, load_embedder, pairwise_scores  # noqa: E402

SHARED_ALPACA = REPO.parent / "shared" / "data" / "alpaca_4k.json"
PREFIXES = ["", "Please ", "Could you ", "I need you to ", "Quickly, ", "Task: "]
SUFFIXES = ["", " Keep it short.", " Be precise.", " Answer in one paragraph.", " Use simple words."]


def base_instructions() -> tuple[list[str], str]:
    if SHARED_ALPACA.is_file():
        rows = json.loads(SHARED_ALPACA.read_text(encoding="utf-8"))
        return [r["instruction"] for r in rows], str(SHARED_ALPACA)
    demo = REPO / "citing_trl" / "demo_data" / "demo.jsonl"
    rows = [json.loads(line) for line in demo.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["instruction"] for r in rows], f"{demo} (../shared absent)"


def perturbed(texts: list[str], n: int) -> list[str]:
    """``n`` distinct instructions: the originals, then copies with a prefix and/or suffix added."""
    out, seen = [], set()
    variants = [(p, s) for s in SUFFIXES for p in PREFIXES]
    for p, s in variants:
        for t in texts:
            t = t.strip()
            v = (p + t[:1].lower() + t[1:] if p else t) + s
            if v not in seen:
                seen.add(v)
                out.append(v)
                if len(out) == n:
                    return out
    raise SystemExit(f"only {len(out)} distinct perturbations available, asked for {n}")


def naive_scores(new: np.ndarray, members: list[np.ndarray]) -> np.ndarray:
    """Eq. 2 literally: for each instruction and category, the mean of the cosines to the members."""
    out = np.zeros((len(new), len(members)))
    for i, e_n in enumerate(new):
        for j, e_h in enumerate(members):
            total = 0.0
            for e in e_h:
                total += float(np.dot(e_n, e) / (np.linalg.norm(e_n) * np.linalg.norm(e)))
            out[i, j] = total / len(e_h)
    return out


def timed(fn, repeat: int = 1, cpu: bool = False):
    """Best wall time over ``repeat`` runs (and, with ``cpu``, that run's process CPU time)."""
    best, best_cpu, result = float("inf"), 0.0, None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall, used = time.perf_counter() - t0, time.process_time() - c0
        if wall < best:
            best, best_cpu = wall, used
    return ((best, best_cpu) if cpu else best), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="instructions to embed and match")
    ap.add_argument("--naive_n", type=int, default=1_000, help="instructions for the naive-loop comparison")
    ap.add_argument("--encode_batch_sizes", type=int, nargs="+", default=[64], help="sentence-BERT batch sizes")
    ap.add_argument("--embedder", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    base, origin = base_instructions()
    texts = perturbed(base, args.n)
    t0 = time.perf_counter()
    embedder = load_embedder(args.embedder)
    load_s = time.perf_counter() - t0
    rubric = default_rubric()
    matcher = RubricMatcher(rubric, embedder)
    matcher.encode(texts[:64])  # warm-up
    report: dict = {
        "instructions": len(texts), "source": origin, "categories": len(rubric.categories),
        "members": len(matcher.member_texts), "embedder_load_s": round(load_s, 2),
        "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "cuda": torch.cuda.is_available(), "load_average": list(os.getloadavg()), "embedding": [],
    }
    print(f"{len(texts)} instructions from {origin}; rubric: {len(rubric.categories)} categories, "
          f"{len(matcher.member_texts)} members; torch threads {torch.get_num_threads()}, "
          f"cuda {torch.cuda.is_available()}")

    emb = None
    for bs in args.encode_batch_sizes:
        matcher.encode_batch_size = bs
        (secs, cpu_s), emb = timed(lambda: matcher.encode(texts), cpu=True)
        report["embedding"].append({"encode_batch_size": bs, "seconds": round(secs, 3), "cpu_seconds": round(cpu_s, 3),
                                    "per_second": round(len(texts) / secs, 1)})
        print(f"embedding  (Eq. 1), batch {bs:4d}: {secs:8.3f} s  {len(texts) / secs:12,.0f} instructions/s"
              f"   (process CPU time {cpu_s:.1f} s)")

    match_s, matches = timed(lambda: matcher.matches_from_scores(matcher.scores_from_embeddings(emb)), repeat=5)
    scores_s, _ = timed(lambda: matcher.scores_from_embeddings(emb), repeat=5)
    report["matching"] = {"seconds": round(match_s, 4), "per_second": round(len(texts) / match_s, 1),
                          "scores_only_seconds": round(scores_s, 5)}
    print(f"matching   (Eq. 2 + argmax + margin): {match_s:8.4f} s  {len(texts) / match_s:12,.0f} instructions/s"
          f"   (scores alone {scores_s * 1000:.2f} ms)")
    best = min(e["seconds"] for e in report["embedding"])
    print(f"share of matching in the total: {match_s / (match_s + best):.2%}")
    counts: dict[str, int] = {}
    for m in matches:
        counts[m.category] = counts.get(m.category, 0) + 1
    report["distribution"] = counts
    print("category distribution:", counts)

    # naive loop vs matrix forms, same embeddings
    k = min(args.naive_n, len(texts))
    new = emb[:k]
    members = [matcher.member_embeddings[matcher.member_category == j] for j in range(len(rubric.categories))]
    naive_s, naive = timed(lambda: naive_scores(new, members))
    pair_s, pair = timed(lambda: pairwise_scores(new, matcher.member_embeddings, matcher.sizes), repeat=20)
    fast_s, fast = timed(lambda: matcher.scores_from_embeddings(new), repeat=20)
    max_diff = float(max(np.abs(naive - pair).max(), np.abs(naive - fast).max()))
    same_argmax = bool((naive.argmax(1) == fast.argmax(1)).all() and (naive.argmax(1) == pair.argmax(1)).all())
    report["scoring_comparison"] = {
        "instructions": k, "naive_loop_s": round(naive_s, 4), "pairwise_matrix_s": round(pair_s, 6),
        "category_mean_matrix_s": round(fast_s, 6), "naive_over_pairwise": round(naive_s / pair_s, 1),
        "naive_over_category_mean": round(naive_s / fast_s, 1), "max_abs_difference": max_diff,
        "same_argmax": same_argmax,
    }
    print(f"\nEq. 2 scores for {k} instructions x {len(matcher.member_texts)} members, same embeddings:")
    print(f"  naive Python loop          {naive_s * 1000:10.2f} ms")
    print(f"  pairwise matrix + means    {pair_s * 1000:10.3f} ms   ({naive_s / pair_s:,.0f}x faster)")
    print(f"  category-mean matrix       {fast_s * 1000:10.3f} ms   ({naive_s / fast_s:,.0f}x faster)")
    print(f"  max |difference| {max_diff:.2e}, same arg-max: {same_argmax}")

    report["load_average_after"] = list(os.getloadavg())
    print(f"load average before/after: {report['load_average'][0]:.2f} / {report['load_average_after'][0]:.2f} "
          f"on {os.cpu_count()} CPUs (other processes share the CPU; compare CPU time)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
