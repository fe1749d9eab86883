"""One evaluation run: answers files -> gold metrics, Tables 1-2, Figure 2 and the judge's usage.

``recipes/evaluate.py`` is a page of glue around :func:`run_evaluation`; its settings are in
:mod:`citing_trl.evaluation.config` (:class:`EvaluationArguments`, the judge's :class:`JudgeArguments`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from citing_trl.evaluation.config import EvaluationArguments
from citing_trl.evaluation.formatting import num, pct, percent, pts, signed
from citing_trl.evaluation.judge import JudgeStats, PairwiseJudge
from citing_trl.evaluation.reports import (
    AnswersError,
    DataIssues,
    align,
    chance_lines,
    chance_note,
    constraint_type_report,
    expand_steps,
    family_of,
    gold_markdown,
    gold_report,
    index_rows,
    lc_cell,
    load_answers,
    n_words,
    net_cell,
    paired_gold_report,
    paired_reference_report,
    pairwise_rows,
    plot_fig2,
    step_fix_break,
    strict_json,
    write_table,
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
    for names in steps.values():
        table2 += [(f"{new} vs {old}", new, old) for old, new in zip(names, names[1:])]
    pairs = {label: (a, b, align(a, indexed[a], b, indexed[b], issues)) for label, a, b in table1 + table2}
    for label, (a, b, ids) in pairs.items():
        if not ids:
            raise AnswersError(f"{_source(a, files)} and {_source(b, files)} share no row id, so they cannot be "
                               f"compared ({label}); check that both answer the same test rows")

    gold = gold_report(systems, n_boot=args.bootstrap_samples, seed=args.seed)
    # paired against the reference: every other answers file, and each earlier self-revision step of the
    # reference against them (its last step is the reference's own answer)
    gold_pairs = [(label, a, b) for label, a, b in table1]
    gold_pairs += [(f"{step} vs {b}", step, b) for step in steps.get(reference, [])[:-1] for _, _, b in table1]
    boot = dict(n_boot=args.bootstrap_samples, seed=args.seed)
    gold["_paired"] = paired_gold_report(systems, gold_pairs, **boot)
    gold["_reference_overlap"] = paired_reference_report(systems, gold_pairs, **boot)
    if types := constraint_type_report(systems):
        gold["_constraint_types"] = types
    (out / "gold.json").write_text(strict_json(gold, indent=2) + "\n")
    (out / "gold.md").write_text(gold_markdown(gold))
    order2 = [args.round_names()] + list(steps.values())
    table2_extra = {"gold": {n: gold[n] for seq in order2 for n in seq},
                    "fix_break": {k: v for seq in order2 if seq for k, v in step_fix_break(systems, seq).items()},
                    "paired": paired_gold_report(systems, table2, **boot)}
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
    summary["judge_pairs"] = {label: len(judged) for label, judged in by_label.items()}
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
            lines.append(f"- {label}: position consistency {percent(rate)}, first-position win share {percent(share)}, "
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


def headline(summary: dict) -> list[str]:
    """The most informative offline comparison in a few sentences: the pooled paired gold difference of each
    comparison against the reference; without gold, the paired token overlap with the reference answers (a
    proxy); without either, what is missing. Printed first and again as the last word of the printout."""
    gold = summary["gold"]
    lines = []
    paired = gold.get("_paired") or (summary.get("table2_extra") or {}).get("paired") or {}
    # the reference's own final answers against the others (its earlier steps stay in the tables)
    paired = {k: v for k, v in paired.items() if v["after"] == summary["reference"]} or paired
    for label, entry in paired.items():
        m = entry["_all"]
        a, b = entry["after"], entry["before"]
        lo, hi = m["ci"]
        line = (f"{label} (gold, pooled over {m['n']} rows both answered): {a} {percent(m['after'])} vs {b} "
                f"{percent(m['before'])}, difference {pts(m['diff'])} [95% CI {pts(lo)}, {pts(hi)}], {m['fixed']} "
                f"fixed / {m['broken']} broken, McNemar p = {m['mcnemar_p']:.3g}; {m['n']} rows detect about "
                f"±{100 * m['mde']:.1f} pts")
        if note := chance_note(m, a, b):
            line += f"; pooled accuracy: {note}"
        lines.append(line + ".")
    unscored = {s: c for name, sources in gold.items() if not name.startswith("_")
                for s, c in (sources.get("_unscored") or {}).items()}
    if lines:
        return lines
    rows = ", ".join(f"source {s}" for s in sorted(unscored)) or "these rows"
    for label, entry in (gold.get("_reference_overlap") or {}).items():
        m = entry["_all"]
        lo, hi = m["ci"]
        lines.append(f"{label}: no gold answers on the {m['n']} rows both answered ({rows}), so no accuracy can be "
                     f"compared offline. Token overlap with the reference answer (F1, a proxy for closeness, not "
                     f"correctness): {entry['after']} {percent(m['after'])} vs {entry['before']} "
                     f"{percent(m['before'])}, "
                     f"difference {pts(m['diff'])} [95% CI {pts(lo)}, {pts(hi)}], higher on {m['higher']} rows, "
                     f"lower on {m['lower']}, equal on {m['equal']} (sign test p = {m['sign_p']:.3g}).")
    if not lines and sum(not name.startswith("_") for name in gold) > 1:
        lines.append(f"No gold and no reference answers on the compared rows ({rows}): nothing offline compares "
                     "these systems; only the judge table does.")
    return lines


def _judge_consistency(summary: dict, rows: list[dict]) -> float | None:
    """The judge's mean order consistency over the comparisons in ``rows`` (None if unknown)."""
    per = (summary.get("judge_usage") or {}).get("per_comparison") or {}
    rates = [per.get(label, {}).get("consistency_rate") for label in dict.fromkeys(r["comparison"] for r in rows)]
    rates = [r for r in rates if r is not None]
    return sum(rates) / len(rates) if rates else None


def _judge_title(title: str, summary: dict, rows: list[dict]) -> str:
    """A judge table's title that says what the judge is: model, order consistency, pairs."""
    judge = (summary.get("judge_usage") or {}).get("judge") or {}
    labels = list(dict.fromkeys(r["comparison"] for r in rows))
    pairs = sum((summary.get("judge_pairs") or {}).get(label, 0) for label in labels)
    return (f"{title} - judge {judge.get('model', '?')} ({judge.get('backend', '?')}), order-consistent on "
            f"{percent(_judge_consistency(summary, rows))} of judgements, {pairs} pairs: win / tie / lose % of the "
            "first-named system")


def print_summary(summary: dict, console=None) -> None:
    """The printout, most informative first: the offline paired comparison (gold, else token overlap with the
    reference answers), each system's gold metrics with chance levels, Table 2's paired steps, then the judge's
    tables labelled with the judge, its order consistency and the number of pairs, the data issues, and the
    headline again as the last word."""
    import sys

    from rich.console import Console
    from rich.table import Table

    console = console or (Console() if sys.stdout.isatty() else Console(width=150))
    gold = summary["gold"]
    lead = headline(summary)
    if lead:
        console.rule("Offline comparison (reference vs others)")
        for line in lead:
            console.print(line)

    def paired_table(title: str, paired: dict) -> None:
        table = Table(title=title)
        for col in ("comparison", "source", "n", "chance%", "1st%", "2nd%", "diff pts", "95% CI", "fixed", "broken",
                    "McNemar p", "detect ±", "note"):
            table.add_column(col, justify="left" if col in ("comparison", "source", "note") else "right")
        for label, entry in paired.items():
            for key, m in entry.items():
                if key in ("after", "before"):
                    continue
                lo, hi = m["ci"]
                table.add_row(label, "all (pooled)" if key == "_all" else key, str(m["n"]),
                              pct(m.get("chance", {}).get("level")), pct(m["after"]),
                              pct(m["before"]), signed(m["diff"]),
                              f"{signed(lo)} to {signed(hi)}", str(m["fixed"]), str(m["broken"]),
                              f"{m['mcnemar_p']:.3g}", f"{100 * m['mde']:.1f}", chance_note(m, entry["after"], entry["before"]))
        console.print(table)

    if gold.get("_paired"):
        paired_table("Paired gold differences vs the reference (rows both answered)", gold["_paired"])
    own = Table(title="Gold-answer metrics of each system (%)")
    for col in ("system", "source", "n", "metrics", "chance", "at chance"):
        own.add_column(col)
    for system, sources in gold.items():
        if system.startswith("_"):
            continue
        for source, m in sources.items():
            if source != "_unscored":
                values = ", ".join(f"{k} {100 * v:.1f}" for k, v in m.items()
                                   if isinstance(v, float) and k not in ("n", "ci"))
                totals = ", ".join(f"{k} {v}" for k, v in m.items() if k.endswith("_total"))
                chance = m.get("chance")
                own.add_row(system, "all (pooled)" if source == "_all" else source, str(m["n"]),
                            values + (f" ({totals})" if totals else ""),
                            "" if chance is None else f"{100 * chance['level']:.1f}",
                            "" if chance is None else ("yes" if m.get("at_chance") else "no"))
    if own.row_count:
        console.print(own)
    for line in chance_lines(gold):
        console.print(f"[yellow]{line}[/yellow]")
    if gold.get("_constraint_types"):
        types = Table(title="Constraint types: IFEval instruction-level accuracy (%), strict / loose")
        names = list(gold["_constraint_types"])
        for col in ("constraint type", "n", *names):
            types.add_column(col, justify="left" if col == "constraint type" else "right")
        ids = sorted({i for per in gold["_constraint_types"].values() for i in per})
        for i in ids:
            per = [gold["_constraint_types"][s].get(i) for s in names]
            types.add_row(i, str(max(p["n"] for p in per if p)),
                          *("" if p is None else f"{100 * p['strict']:.1f} / {100 * p['loose']:.1f}" for p in per))
        console.print(types)
    if summary.get("table2_extra", {}).get("paired"):
        paired_table("Table 2 (gold): paired differences between consecutive steps / rounds",
                     summary["table2_extra"]["paired"])
    for key, title in (("table1", "Table 1"), ("table2", "Table 2")):
        rows = summary.get(key) or []
        if not rows:
            continue
        table = Table(title=_judge_title(title, summary, rows))
        for col in ("comparison", "family", "aspect", "n", "win%", "tie%", "lose%", "win 95% CI", "win-lose (95% CI)",
                    "sign p", "LC win%", "unparsed", "words 1st/2nd"):
            table.add_column(col, justify="right" if col not in ("comparison", "family", "aspect") else "left")
        for r in rows:
            table.add_row(r["comparison"], r["family"], r["aspect"], str(r["n"]), num(r["win_pct"]), num(r["tie_pct"]),
                          num(r["lose_pct"]), f"{num(r['win_ci_low_pct'])}-{num(r['win_ci_high_pct'])}", net_cell(r),
                          f"{r['sign_p']:.3g}", lc_cell(r), str(r["unparsed"]),
                          f"{r['mean_len_ref']:.0f}/{r['mean_len_other']:.0f}")
        console.print(table)
        consistency = _judge_consistency(summary, rows)
        if consistency is not None and consistency < 0.5:
            console.print(f"[yellow]{title}: a judge whose verdict survives swapping the answers on only "
                          f"{percent(consistency)} of judgements is no evidence either way "
                          "(see docs/evaluation.md)[/yellow]")
    usage = summary.get("judge_usage")
    if usage:
        console.print(f"judge: {usage['requests']} requests ({usage['cache_hits']} cached, {usage['requests_sent']} "
                      f"sent), consistency {percent(usage['consistency_rate'])}, first-position wins "
                      f"{percent(usage['first_position_win_share'])}, unparsed {usage['unparsed']}")
    for line in summary["issues"]:
        console.print(f"[yellow]data issue[/yellow] {line}")
    console.print(f"reports in {summary['output_dir']}")
    if lead:
        console.rule("In short")
        for line in lead:
            console.print(line)
