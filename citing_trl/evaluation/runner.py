"""One evaluation run: answers files -> gold metrics, Tables 1-2, Figure 2 and the judge's usage.

``recipes/evaluate.py`` is a page of glue around :func:`run_evaluation`; its settings are in
:mod:`citing_trl.evaluation.config` (:class:`EvaluationArguments`, the judge's :class:`JudgeArguments`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from citing_trl.evaluation.config import EvaluationArguments, JudgeArguments, judge_config  # noqa: F401 (re-exported)
from citing_trl.evaluation.judge import JudgeStats, PairwiseJudge
from citing_trl.evaluation.reports import (
    AnswersError, DataIssues, align, expand_steps, family_of, gold_markdown, gold_report, index_rows, lc_cell, load_answers, n_words,
    pairwise_rows, plot_fig2, step_fix_break, strict_json, write_table,
)
from citing_trl.teacher import Teacher, TeacherConfig

logger = logging.getLogger(__name__)

def _source(system: str, files: dict) -> str:
    """``system (file)`` for an answers file's system, or a self-revision step ``NAME@j`` of one."""
    path = files.get(system, files.get(system.rsplit("@", 1)[0]))
    return f"{system} ({path})" if path is not None else system


def _pair_items(ref: dict[str, dict], other: dict[str, dict], ids: list[str]) -> list[dict]:
    return [{"id": i, "instruction": ref[i]["instruction"], "input": ref[i]["input"], "a": ref[i]["response"],
             "b": other[i]["response"], "family": family_of(ref[i]["source"]),
             "len_ref": n_words(ref[i]["response"]), "len_other": n_words(other[i]["response"])} for i in ids]


def run_evaluation(args: EvaluationArguments, judge: TeacherConfig | None, teacher=None) -> dict:
    """Everything ``recipes/evaluate.py`` writes; returns a summary dict. ``judge`` is the judge's TeacherConfig
    (see :func:`~citing_trl.evaluation.config.judge_config`); None writes the gold metrics only. ``teacher``
    replaces the judge client built from it (tests)."""
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

    # comparisons: (label, table, reference-side system, other system)
    table1 = [(f"{reference} vs {n}", reference, n) for n in files if n != reference]
    table2 = [(f"{new} vs {old}", new, old) for old, new in zip(args.round_names(), args.round_names()[1:])]
    for name, names in steps.items():
        table2 += [(f"{new} vs {old}", new, old) for old, new in zip(names, names[1:])]
    pairs = {label: (a, b, align(a, indexed[a], b, indexed[b], issues)) for label, a, b in table1 + table2}
    for label, (a, b, ids) in pairs.items():
        if not ids:
            raise AnswersError(f"{_source(a, files)} and {_source(b, files)} share no row id, so they cannot be "
                               f"compared ({label}); check that both answer the same test rows")

    gold = gold_report(systems, n_boot=args.bootstrap_samples, seed=args.seed)
    (out / "gold.json").write_text(strict_json(gold, indent=2) + "\n")
    (out / "gold.md").write_text(gold_markdown(gold))
    order2 = [args.round_names()] + list(steps.values())
    table2_extra = {"gold": {n: gold[n] for seq in order2 for n in seq},
                    "fix_break": {k: v for seq in order2 if seq for k, v in step_fix_break(systems, seq).items()}}
    (out / "issues.json").write_text(strict_json(issues.to_dict(), indent=2) + "\n")
    summary = {"output_dir": str(out), "reference": reference, "gold": gold, "issues": issues.lines(),
               "table1": [], "table2": [], "table2_extra": table2_extra}
    if judge is None:
        if table2:
            write_table(out, "table2", "Table 2: consecutive rounds / self-revision steps (gold only, no judge)",
                        [], table2_extra)
        return summary

    teacher = teacher or Teacher(judge, cache_path=args.judge_cache or out / "judge_cache.jsonl")
    aspects = args.aspects()
    pairwise = PairwiseJudge(teacher, aspects=aspects, mode=args.judge_mode,
                             max_parse_retries=args.judge_max_parse_retries, max_tokens=judge.max_tokens)
    items, owner = [], []
    for label, (a, b, ids) in pairs.items():
        new = _pair_items(indexed[a], indexed[b], ids)
        items += new
        owner += [label] * len(new)
    details = pairwise.compare_detailed(items) if items else []
    by_label: dict[str, list] = {label: [] for label in pairs}
    for item, label, d in zip(items, owner, details):
        by_label[label].append({**item, "verdicts": d["verdicts"], "orders": d["orders"]})
    with (out / "verdicts.jsonl").open("w") as fh:
        for label, judged in by_label.items():
            for j in judged:
                fh.write(strict_json({"comparison": label, "id": j["id"], "family": j["family"],
                                     "verdicts": j["verdicts"], "orders": j["orders"]}) + "\n")
    per_comparison = {label: JudgeStats.of(judged).summary() for label, judged in by_label.items()}
    stats = pairwise.stats.summary()
    usage = {"judge": {"backend": judge.backend, "model": judge.model, "mode": args.judge_mode,
                       "batch": judge.mode == "batch",
                       "aspects": aspects, "max_parse_retries": args.judge_max_parse_retries},
             **teacher.ledger.summary(), "consistency_rate": stats["consistency_rate"],
             "first_position_win_share": stats["first_position_win_share"], "unparsed": stats["unparsed"],
             "reasked": stats["reasked"], "judge_stats": stats, "per_comparison": per_comparison}
    (out / "judge_usage.json").write_text(strict_json(usage, indent=2) + "\n")

    def rows_of(labels):
        return [r for label in labels for r in pairwise_rows(label, by_label[label], aspects,
                                                             n_boot=args.bootstrap_samples, seed=args.seed)]

    def notes(labels):
        lines = [f"Judge: {judge.model} ({judge.backend}, {args.judge_mode}); both orders per pair, a "
                 "verdict that changes with the order is a tie. Win/tie/lose are the first-named system's; the "
                 "win CI is a paired bootstrap over pairs; LC win % is the length-controlled preference "
                 "(ties half) at zero length difference, \"undetermined\" when every win and loss agrees with which "
                 "answer is longer; lengths in words."]
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
                          f(r["lose_pct"]), f"{f(r['win_ci_low_pct'])}-{f(r['win_ci_high_pct'])}", lc_cell(r),
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
