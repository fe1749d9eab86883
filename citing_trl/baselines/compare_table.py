"""The one results table of a comparison run (``make compare``): systems x sources, pooled, and each system's
paired difference with CITING.

It reads what the stages left on disk and computes nothing new: ``eval/gold.json`` (per-source gold metrics
and the paired comparisons of :mod:`citing_trl.evaluation.paired`, written by ``recipes/evaluate.py``), each
rival's ``reward.json`` (which reward it optimised), the reward model's held-out pair accuracy
(:func:`~citing_trl.baselines.reward_model.reward_model_quality`), ``sft_more/stats.json`` (the matched steps
and tokens) and the stages' done markers (wall time per stage). :func:`compare_table` returns the Markdown that
``baselines/compare.py`` prints last and saves as ``eval/compare_table.md``.

Cells are the source's primary gold metric in percent (accuracy for yes/no and multiple choice,
``answer_in_response`` for open QA and SQuAD v2). ``≈`` marks a system whose 95% interval reaches the source's
chance level (majority answer, 1/k, always-abstain; see :func:`citing_trl.evaluation.gold.chance_level`).
The difference column is CITING minus the system on the rows both answered, with its paired bootstrap 95% CI,
wrong->right / right->wrong counts seen from the system to CITING, and the exact McNemar p.
"""

from __future__ import annotations

import json
from pathlib import Path

from citing_trl.baselines.reward_model import describe_quality, reward_model_quality
from citing_trl.evaluation.formatting import p_value, signed
from citing_trl.stages import is_done, read_marker

PRIMARY = ("accuracy", "prompt_strict", "answer_in_response", "correct")  # "correct": the pooled share right


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _primary(entry: dict) -> float | None:
    return next((entry[k] for k in PRIMARY if isinstance(entry.get(k), (int, float))), None)


def _cell(entry: dict | None) -> str:
    value = _primary(entry or {})
    if value is None:
        return "-"
    return f"{'≈' if (entry or {}).get('at_chance') else ''}{100 * value:.1f}"


def _reward_label(out: Path, system: str) -> str:
    info = _read(out / system / "reward.json")
    if not info:
        return ""
    if info.get("kind") == "gold":
        return "gold reward"
    quality = info.get("quality") or {}
    return f"reward model ({quality.get('label', 'unmeasured')})"


def compare_table(out: str | Path, systems: list[str], reference: str = "citing") -> str:
    """Markdown results table of the comparison run under ``out`` (see the module docstring)."""
    out = Path(out)
    gold = _read(out / "eval" / "gold.json")
    if not gold:
        return f"(no {out / 'eval' / 'gold.json'} yet: run the evaluate stage)"
    names = [s for s in gold if not s.startswith("_")]
    steps = sorted((s for s in names if s.startswith(f"{reference}@")), key=lambda s: int(s.split("@")[1]))
    order = [s for s in systems if s in names and s != reference] + steps + ([reference] if reference in names else [])
    sources = sorted({k for s in order for k in gold[s] if not k.startswith("_")})
    paired = gold.get("_paired", {})
    lines = [f"| system | {' | '.join(sources)} | pooled | {reference} − system [95% CI] | fixed / broken | McNemar p |",
             "|---|" + "---:|" * (len(sources) + 1) + "---:|---:|---:|"]
    chance = {src: next((gold[s][src].get("chance") for s in order if isinstance(gold[s].get(src, {}).get("chance"), dict)),
                        None) for src in sources}
    lines.append("| *chance level* | " + " | ".join(
        f"*{100 * c['level']:.1f}*" if c and c.get("level") is not None else "-" for c in chance.values())
        + " | | | | |")
    for s in order:
        label = s if s != reference else f"{reference} (final)"
        extra = _reward_label(out, s)
        cells = [_cell(gold[s].get(src)) for src in sources] + [_cell(gold[s].get("_all"))]
        pair = (paired.get(f"{reference} vs {s}") or {}).get("_all") if s != reference else None
        if pair:
            lo, hi = pair["ci"]
            # paired_gold's fixed/broken read from the system ("before") to the reference ("after")
            diff = f"{signed(pair['diff'])} [{signed(lo)}, {signed(hi)}]"
            fb, p = f"{pair['fixed']} / {pair['broken']}", p_value(pair["mcnemar_p"])
        else:
            diff, fb, p = "", "", ""
        lines.append(f"| {label}{f' ({extra})' if extra else ''} | {' | '.join(cells)} | {diff} | {fb} | {p} |")
    n = {src: gold[order[0]][src].get("n") for src in sources} if order else {}
    lines += ["", f"Rows per source: {', '.join(f'{k} {v}' for k, v in n.items())}. Cells: primary gold metric in %; "
              "≈ = the 95% interval reaches the chance level. fixed / broken: rows the system got wrong and "
              f"{reference} right / the other way round."]
    steps_paired = _read(out / "eval" / "table2.json").get("paired", {})
    for label, entry in steps_paired.items():
        pooled = entry.get("_all") or {}
        if pooled:
            lo, hi = pooled["ci"]
            lines.append(f"Self-revision {label}: {signed(pooled['diff'])} pts [{signed(lo)}, {signed(hi)}], fixed "
                         f"{pooled['fixed']}, broken {pooled['broken']}, McNemar p {p_value(pooled['mcnemar_p'])}.")
    if (out / "reward_model").is_dir():
        lines.append(f"Reward model ({out / 'reward_model'}): {describe_quality(reward_model_quality(out / 'reward_model'))}.")
    more = _read(out / "sft_more" / "stats.json")
    if more.get("tokens"):
        mine, theirs = more["tokens"]["sft_more"], more["tokens"]["citing"]
        lines.append(f"sft_more: {more.get('optimizer_steps')} optimizer steps (CITING's rounds: "
                     f"{more.get('citing_optimizer_steps')}); tokens trained, all / completion: {mine['all']} / "
                     f"{mine['completion']} (CITING: {theirs['all']} / {theirs['completion']}).")
    walls = {p.stem: read_marker(p).get("wall_s") for p in sorted((out / ".stages").glob("*.done")) if is_done(p)}
    if walls:
        total = sum(w for w in walls.values() if isinstance(w, (int, float)))
        lines.append("Wall time per stage (s): " + ", ".join(f"{k} {v}" for k, v in walls.items())
                     + f"; total {total / 60:.1f} min.")
    return "\n".join(lines)
