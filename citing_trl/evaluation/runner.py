"""One evaluation run: answers files -> gold metrics, Tables 1-2, Figure 2 and the judge's usage.

``recipes/evaluate.py`` is a page of glue around :func:`run_evaluation`; see :class:`EvaluationArguments`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from citing_trl.evaluation.judge import MODES, JudgeStats, PairwiseJudge
from citing_trl.evaluation.reports import (
    DataIssues, align, expand_steps, family_of, gold_markdown, gold_report, index_rows, load_answers, n_words,
    pairwise_rows, plot_fig2, step_fix_break, write_table,
)
from citing_trl.prompts import JUDGE_ASPECTS

logger = logging.getLogger(__name__)

JUDGE_BACKENDS = ("none", "local", "openai")


@dataclass
class EvaluationArguments:
    """Settings of ``recipes/evaluate.py``."""

    answers: list[str] = field(
        default_factory=list,
        metadata={"help": "Answers files as NAME=FILE (JSONL: id, source, instruction, input, answers, response "
                          "[, responses]). Two or more for Table 1; one file with `responses` gives Table 2 steps."},
    )
    reference: str | None = field(
        default=None, metadata={"help": "NAME of the system compared against every other (default: the first)."}
    )
    rounds: str | None = field(
        default=None,
        metadata={"help": "Comma-separated NAMEs of consecutive training rounds, oldest first (e.g. "
                          "round0,round1,round2): Table 2 compares each with the one before."},
    )
    output_dir: str = field(default="outputs/eval", metadata={"help": "Where the reports are written."})
    judge_backend: str = field(
        default="local",
        metadata={"help": "`none` (gold metrics only), `local` (in-process model, default the embedded "
                          "SmolLM2-135M) or `openai` (any OpenAI-compatible server, e.g. a GPT-4-class model)."},
    )
    judge_model: str = field(
        default="embedded",
        metadata={"help": "Judge model: the served name for `openai`; a folder, Hub id or `embedded` for `local`."},
    )
    judge_base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible base URL (…/v1)."})
    judge_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "NAME of the environment variable holding the API key."}
    )
    judge_mode: str = field(
        default="joint",
        metadata={"help": "`joint`: one request per order returns all aspects as JSON; `per_aspect`: one request "
                          "per order and aspect (the paper's setting, 3x the calls)."},
    )
    judge_aspects: str | None = field(
        default=None, metadata={"help": "Comma-separated aspects (default: articulate,in-depth,comprehensive)."}
    )
    judge_max_parse_retries: int = field(
        default=2, metadata={"help": "Times an unreadable verdict is asked again before it counts as unparsed."}
    )
    judge_max_tokens: int | None = field(default=None, metadata={"help": "Token budget of a verdict (default: small)."})
    judge_max_concurrency: int = field(default=8, metadata={"help": "Most judge requests in flight (`openai`)."})
    judge_timeout: float = field(default=120.0, metadata={"help": "Seconds before a judge request is retried."})
    judge_batch: bool = field(
        default=False,
        metadata={"help": "`openai` only: send judge requests through the OpenAI Batch API (half the price, answers "
                          "within its 24h window; the batch id is saved next to the judge cache, so a killed run "
                          "polls the same batch). Re-asks of unreadable verdicts go in a further batch."},
    )
    judge_batch_poll_interval: float = field(default=30.0, metadata={"help": "Seconds between polls of a judge batch."})
    judge_local_batch_size: int = field(default=8, metadata={"help": "Prompts per forward pass (`local`)."})
    judge_price_prompt_per_1m: float = field(default=0.0, metadata={"help": "Prompt price per 1M tokens (cost estimate)."})
    judge_price_completion_per_1m: float = field(
        default=0.0, metadata={"help": "Completion price per 1M tokens (cost estimate)."}
    )
    judge_cache: str | None = field(
        default=None, metadata={"help": "Judge answer cache (default: OUTPUT_DIR/judge_cache.jsonl); reruns are free."}
    )
    bootstrap_samples: int = field(default=2000, metadata={"help": "Bootstrap resamples for the 95%% intervals."})
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap."})

    def systems(self) -> dict[str, str]:
        """NAME -> FILE, checked; ValueError names the flag."""
        if not self.answers:
            raise ValueError("--answers: give at least one NAME=FILE")
        out = {}
        for spec in self.answers:
            name, sep, path = spec.partition("=")
            if not sep or not name.strip() or not path.strip():
                raise ValueError(f"--answers: {spec!r} is not NAME=FILE")
            if name in out:
                raise ValueError(f"--answers: the name {name!r} is given twice")
            out[name.strip()] = path.strip()
        return out

    def validate(self) -> None:
        names = self.systems()
        if self.reference is not None and self.reference not in names:
            raise ValueError(f"--reference {self.reference!r} is not one of the --answers names {list(names)}")
        for name in self.round_names():
            if name not in names:
                raise ValueError(f"--rounds: {name!r} is not one of the --answers names {list(names)}")
        if self.rounds is not None and len(self.round_names()) < 2:
            raise ValueError(f"--rounds needs at least two names, got {self.rounds!r}")
        if self.judge_backend not in JUDGE_BACKENDS:
            raise ValueError(f"--judge_backend must be one of {', '.join(JUDGE_BACKENDS)}, got {self.judge_backend!r}")
        if self.judge_mode not in MODES:
            raise ValueError(f"--judge_mode must be one of {', '.join(MODES)}, got {self.judge_mode!r}")
        if unknown := [a for a in self.aspects() if a not in JUDGE_ASPECTS]:
            raise ValueError(f"--judge_aspects: unknown {unknown}; expected some of {list(JUDGE_ASPECTS)}")
        if self.judge_batch and self.judge_backend != "openai":
            raise ValueError(f"--judge_batch needs --judge_backend openai (the Batch API), got {self.judge_backend!r}")
        if self.judge_batch_poll_interval <= 0:
            raise ValueError(f"--judge_batch_poll_interval must be > 0 seconds, got {self.judge_batch_poll_interval}")
        if self.judge_max_parse_retries < 0:
            raise ValueError(f"--judge_max_parse_retries must be >= 0, got {self.judge_max_parse_retries}")
        if self.bootstrap_samples < 1:
            raise ValueError(f"--bootstrap_samples must be >= 1, got {self.bootstrap_samples}")

    def round_names(self) -> list[str]:
        return [n.strip() for n in (self.rounds or "").split(",") if n.strip()]

    def aspects(self) -> list[str]:
        if not self.judge_aspects:
            return list(JUDGE_ASPECTS)
        return [a.strip() for a in self.judge_aspects.split(",") if a.strip()]

    def teacher_config(self):
        from citing_trl.teacher import TeacherConfig

        return TeacherConfig(
            backend=self.judge_backend, model=self.judge_model, base_url=self.judge_base_url,
            api_key_env=self.judge_api_key_env, max_concurrency=self.judge_max_concurrency, timeout=self.judge_timeout,
            temperature=0.0, local_batch_size=self.judge_local_batch_size,
            price_prompt_per_1m=self.judge_price_prompt_per_1m, price_completion_per_1m=self.judge_price_completion_per_1m,
            mode="batch" if self.judge_batch else "live", batch_poll_interval=self.judge_batch_poll_interval,
        )


def _pair_items(ref: dict[str, dict], other: dict[str, dict], ids: list[str]) -> list[dict]:
    return [{"id": i, "instruction": ref[i]["instruction"], "input": ref[i]["input"], "a": ref[i]["response"],
             "b": other[i]["response"], "family": family_of(ref[i]["source"]),
             "len_ref": n_words(ref[i]["response"]), "len_other": n_words(other[i]["response"])} for i in ids]


def run_evaluation(args: EvaluationArguments, teacher=None) -> dict:
    """Everything ``recipes/evaluate.py`` writes; returns a summary dict. ``teacher`` overrides the judge
    client built from the arguments (tests)."""
    args.validate()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = args.systems()
    reference = args.reference or next(iter(files))
    issues = DataIssues()
    indexed = {name: index_rows(name, load_answers(path), issues) for name, path in files.items()}
    systems = {name: list(rows.values()) for name, rows in indexed.items()}
    steps: dict[str, list[str]] = {}  # base name -> its step systems in order
    for name, rows in list(systems.items()):
        expanded = expand_steps(name, rows)
        if len(expanded) > 1:
            steps[name] = list(expanded)
            for step, step_rows in expanded.items():
                systems[step] = step_rows
                indexed[step] = {r["id"]: r for r in step_rows}

    gold = gold_report(systems, n_boot=args.bootstrap_samples, seed=args.seed)
    (out / "gold.json").write_text(json.dumps(gold, indent=2) + "\n")
    (out / "gold.md").write_text(gold_markdown(gold))

    # comparisons: (label, table, reference-side system, other system)
    table1 = [(f"{reference} vs {n}", reference, n) for n in files if n != reference]
    table2 = [(f"{new} vs {old}", new, old) for old, new in zip(args.round_names(), args.round_names()[1:])]
    for name, names in steps.items():
        table2 += [(f"{new} vs {old}", new, old) for old, new in zip(names, names[1:])]
    pairs = {label: (a, b, align(a, indexed[a], b, indexed[b], issues)) for label, a, b in table1 + table2}
    order2 = [args.round_names()] + list(steps.values())
    table2_extra = {"gold": {n: gold[n] for seq in order2 for n in seq},
                    "fix_break": {k: v for seq in order2 if seq for k, v in step_fix_break(systems, seq).items()}}
    (out / "issues.json").write_text(json.dumps(issues.to_dict(), indent=2) + "\n")
    summary = {"output_dir": str(out), "reference": reference, "gold": gold, "issues": issues.lines(),
               "table1": [], "table2": [], "table2_extra": table2_extra}
    if args.judge_backend == "none":
        if table2:
            write_table(out, "table2", "Table 2: consecutive rounds / self-revision steps (gold only, no judge)",
                        [], table2_extra)
        return summary

    from citing_trl.teacher import Teacher

    teacher = teacher or Teacher(args.teacher_config(), cache_path=args.judge_cache or out / "judge_cache.jsonl")
    aspects = args.aspects()
    judge = PairwiseJudge(teacher, aspects=aspects, mode=args.judge_mode,
                          max_parse_retries=args.judge_max_parse_retries, max_tokens=args.judge_max_tokens)
    items, owner = [], []
    for label, (a, b, ids) in pairs.items():
        new = _pair_items(indexed[a], indexed[b], ids)
        items += new
        owner += [label] * len(new)
    details = judge.compare_detailed(items) if items else []
    by_label: dict[str, list] = {label: [] for label in pairs}
    for item, label, d in zip(items, owner, details):
        by_label[label].append({**item, "verdicts": d["verdicts"], "orders": d["orders"]})
    with (out / "verdicts.jsonl").open("w") as fh:
        for label, judged in by_label.items():
            for j in judged:
                fh.write(json.dumps({"comparison": label, "id": j["id"], "family": j["family"],
                                     "verdicts": j["verdicts"], "orders": j["orders"]}) + "\n")
    per_comparison = {label: JudgeStats.of(judged).summary() for label, judged in by_label.items()}
    stats = judge.stats.summary()
    usage = {"judge": {"backend": args.judge_backend, "model": args.judge_model, "mode": args.judge_mode,
                       "batch": args.judge_batch,
                       "aspects": aspects, "max_parse_retries": args.judge_max_parse_retries},
             **teacher.ledger.summary(), "consistency_rate": stats["consistency_rate"],
             "first_position_win_share": stats["first_position_win_share"], "unparsed": stats["unparsed"],
             "reasked": stats["reasked"], "judge_stats": stats, "per_comparison": per_comparison}
    (out / "judge_usage.json").write_text(json.dumps(usage, indent=2) + "\n")

    def rows_of(labels):
        return [r for label in labels for r in pairwise_rows(label, by_label[label], aspects,
                                                             n_boot=args.bootstrap_samples, seed=args.seed)]

    def notes(labels):
        lines = [f"Judge: {args.judge_model} ({args.judge_backend}, {args.judge_mode}); both orders per pair, a "
                 "verdict that changes with the order is a tie. Win/tie/lose are the first-named system's; the "
                 "win CI is a paired bootstrap over pairs; LC win % is the length-controlled preference "
                 "(ties half) at zero length difference; lengths in words."]
        for label in labels:
            s = per_comparison[label]
            rate, share = s["consistency_rate"], s["first_position_win_share"]
            lines.append(f"- {label}: position consistency {_pct(rate)}, first-position win share {_pct(share)}, "
                         f"unparsed {s['unparsed']} of {s['judgements']} judgements")
        return lines

    labels1 = [label for label, _, _ in table1]
    labels2 = [label for label, _, _ in table2]
    if labels1:
        rows1 = rows_of(labels1)
        write_table(out, "table1", "Table 1: pairwise comparison", rows1, {"judge": per_comparison}, notes(labels1))
        plot_fig2(rows1, out / "fig2.png", aspects)
        summary["table1"] = rows1
    if labels2:
        rows2 = rows_of(labels2)
        write_table(out, "table2", "Table 2: consecutive rounds / self-revision steps", rows2,
                    {**table2_extra, "judge": {k: per_comparison[k] for k in labels2}}, notes(labels2))
        summary["table2"] = rows2
    summary["judge_usage"] = usage
    return summary


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def print_summary(summary: dict, console=None) -> None:
    """Rich tables of the gold metrics, Table 1 / Table 2 and the data issues."""
    from rich.console import Console
    from rich.table import Table

    import sys

    console = console or (Console() if sys.stdout.isatty() else Console(width=150))
    gold = Table(title="Gold-answer metrics (%)")
    for col in ("system", "source", "n", "metrics"):
        gold.add_column(col)
    for system, sources in summary["gold"].items():
        for source, m in sources.items():
            if source != "_unscored":
                source = "all (pooled)" if source == "_all" else source
                values = ", ".join(f"{k} {100 * v:.1f}" for k, v in m.items() if k not in ("n", "ci"))
                gold.add_row(system, source, str(m["n"]), values)
    if gold.row_count:
        console.print(gold)
    for key, title in (("table1", "Table 1"), ("table2", "Table 2")):
        rows = summary.get(key) or []
        if not rows:
            continue
        table = Table(title=f"{title}: win / tie / lose % of the first-named system")
        for col in ("comparison", "family", "aspect", "n", "win%", "tie%", "lose%", "win 95% CI", "LC win%", "unparsed",
                    "words 1st/2nd"):
            table.add_column(col, justify="right" if col not in ("comparison", "family", "aspect") else "left")
        for r in rows:
            f = lambda v: "-" if v != v else f"{v:.1f}"  # noqa: E731
            table.add_row(r["comparison"], r["family"], r["aspect"], str(r["n"]), f(r["win_pct"]), f(r["tie_pct"]),
                          f(r["lose_pct"]), f"{f(r['win_ci_low_pct'])}-{f(r['win_ci_high_pct'])}", f(r["lc_win_pct"]),
                          str(r["unparsed"]), f"{r['mean_len_ref']:.0f}/{r['mean_len_other']:.0f}")
        console.print(table)
    usage = summary.get("judge_usage")
    if usage:
        console.print(f"judge: {usage['requests']} requests ({usage['cache_hits']} cached, {usage['requests_sent']} "
                      f"sent), consistency {_pct(usage['consistency_rate'])}, first-position wins "
                      f"{_pct(usage['first_position_win_share'])}, unparsed {usage['unparsed']}")
    for line in summary["issues"]:
        console.print(f"[yellow]data issue[/yellow] {line}")
    console.print(f"reports in {summary['output_dir']}")
