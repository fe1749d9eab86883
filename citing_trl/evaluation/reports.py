"""Answers files in, reports out: data checks, gold tables (each system's own, and paired differences between
systems, :mod:`citing_trl.evaluation.paired`), Tables 1-2 (pairwise) and Figure 2.

An answers file (contract C6) is JSONL with ``id, source, instruction, input, answers, response`` per row and,
for self-revision, ``responses`` = [r(0), ..., r(M)]. Any JSONL with ``id, instruction, response`` also works
(``source`` then defaults to ``user``). Problems between systems (duplicate ids, ids one system lacks, empty
responses, rows without gold) are collected by name and count in :class:`DataIssues`, never dropped silently.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from citing_trl.data import FAMILIES
from citing_trl.errors import UserError
from citing_trl.evaluation import ifeval
from citing_trl.evaluation.formatting import cell, p_value, pct, signed
from citing_trl.evaluation.gold import (
    CONSTRAINT_SOURCES,
    METRICS,
    chance_level,
    fix_break,
    gold_metrics,
    is_correct,
    primary_metric,
    reference_overlap,
    unscored_counts,
)
from citing_trl.evaluation.paired import paired_gold, paired_scores, paired_verdicts
from citing_trl.evaluation.stats import bootstrap_ci, length_controlled
from citing_trl.jsonl import iter_jsonl

FAMILY_OF = {source: family for family, sources in FAMILIES.items() for source in sources}


class AnswersError(UserError, ValueError):
    """An answers file that cannot be used; the message names the file, the line and the field."""


def _finite(value):
    """``value`` with every NaN or infinite number (also numpy's) replaced by None, through dicts, lists and tuples."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return float(value) if math.isfinite(value) else None
    return value


def strict_json(value, indent: int | None = None) -> str:
    """Strict JSON text (RFC 8259) for every JSON file the evaluation writes: NaN and infinities, which
    ``json.dumps`` would write as the non-JSON tokens ``NaN``/``Infinity``, become ``null``."""
    return json.dumps(_finite(value), indent=indent, allow_nan=False)


def family_of(source: str) -> str:
    """The §4.1 family of a source (``citing_trl.data.FAMILIES``); alpaca, demo and any other source are
    their own family."""
    return FAMILY_OF.get(source, source)


def n_words(text: str) -> int:
    return len((text or "").split())


# ------------------------------------------------------------------------------------------------
# Reading answers and checking them against each other
# ------------------------------------------------------------------------------------------------


def load_answers(path: str | Path) -> list[dict]:
    """Rows of an answers JSONL, normalised: ``id`` (str), ``source``, ``instruction``, ``input``, ``answers``,
    ``response`` (``responses[-1]`` when only ``responses`` is given) and ``responses`` (or None)."""
    path = Path(path)
    if not path.is_file():
        raise AnswersError(f"{path}: answers file not found")
    rows = []
    for line, raw in iter_jsonl(path.read_text(encoding="utf-8"), str(path), AnswersError):
        where = f"{path}: {line}"
        if not isinstance(raw, dict):
            raise AnswersError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        rid = raw.get("id")
        if not isinstance(rid, (str, int)) or isinstance(rid, bool) or str(rid) == "":
            raise AnswersError(f"{where}: field 'id' is missing or not a string")
        if not isinstance(raw.get("instruction"), str):
            raise AnswersError(f"{where} (id {rid}): field 'instruction' is missing or not a string")
        responses = raw.get("responses")
        if responses is not None and (not isinstance(responses, list) or not responses
                                      or not all(isinstance(r, str) for r in responses)):
            raise AnswersError(f"{where} (id {rid}): field 'responses' must be a non-empty list of strings")
        response = raw.get("response", responses[-1] if responses else None)
        if not isinstance(response, str):
            raise AnswersError(f"{where} (id {rid}): field 'response' is missing or not a string")
        answers = raw.get("answers") or []
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise AnswersError(f"{where} (id {rid}): field 'answers' must be a list of strings")
        rows.append({"id": str(rid), "source": str(raw.get("source") or "user"), "instruction": raw["instruction"],
                     "input": raw.get("input") or "", "answers": answers, "response": response,
                     "responses": responses})
    if not rows:
        raise AnswersError(f"{path}: no rows")
    return rows


def _examples(ids) -> dict:
    ids = list(ids)
    return {"count": len(ids), "examples": ids[:5]}


class DataIssues:
    """Every problem found while lining systems up, by kind and system, with counts and example ids."""

    def __init__(self):
        self.items: dict[str, dict[str, dict]] = defaultdict(dict)

    def add(self, kind: str, system: str, ids) -> None:
        ids = list(ids)
        if ids:
            self.items[kind][system] = _examples(ids)

    def to_dict(self) -> dict:
        return {k: dict(v) for k, v in self.items.items()}

    def lines(self) -> list[str]:
        out = []
        for kind, systems in self.items.items():
            for system, info in systems.items():
                out.append(f"{kind.replace('_', ' ')}: {system}: {info['count']} (e.g. {', '.join(info['examples'])})")
        return out


def index_rows(name: str, rows: list[dict], issues: DataIssues) -> dict[str, dict]:
    """id -> row (the first of duplicated ids is kept; the duplicates are reported), plus empty responses and
    rows without gold reported per system."""
    seen: dict[str, dict] = {}
    dupes = []
    for r in rows:
        if r["id"] in seen:
            dupes.append(r["id"])
        else:
            seen[r["id"]] = r
    issues.add("duplicate_ids", name, dupes)
    issues.add("empty_responses", name, [i for i, r in seen.items() if not r["response"].strip()])
    issues.add("rows_without_gold", name, [i for i, r in seen.items() if not has_gold(r)])
    return seen


def has_gold(row: dict) -> bool:
    return is_correct(row["source"], row["response"], row["answers"], row["input"]) is not None


def align(a_name: str, a: dict[str, dict], b_name: str, b: dict[str, dict], issues: DataIssues) -> list[str]:
    """Ids both systems answered, in ``a``'s order. Ids only one has are reported under the pair's name, and so
    are shared ids whose instruction or input differ (``different_instruction``; judged with ``a``'s)."""
    issues.add("missing_ids", f"{b_name} (vs {a_name})", [i for i in a if i not in b])
    issues.add("missing_ids", f"{a_name} (vs {b_name})", [i for i in b if i not in a])
    common = [i for i in a if i in b]
    issues.add("different_instruction", f"{b_name} (vs {a_name})",
               [i for i in common if (a[i]["instruction"], a[i]["input"]) != (b[i]["instruction"], b[i]["input"])])
    return common


def expand_steps(name: str, rows: list[dict]) -> dict[str, list[dict]]:
    """Self-revision rows -> one system per step, ``NAME@j`` (j = 0..M), for rows that have step j."""
    depth = max((len(r["responses"]) for r in rows if r.get("responses")), default=0)
    return {f"{name}@{j}": [{**r, "response": r["responses"][j]} for r in rows
                             if r.get("responses") and len(r["responses"]) > j] for j in range(depth)}


# ------------------------------------------------------------------------------------------------
# Gold tables
# ------------------------------------------------------------------------------------------------


def gold_report(systems: dict[str, list[dict]], n_boot: int = 2000, seed: int = 0) -> dict:
    """``{system: {source: {"n", metric..., "ci": {metric: [lo, hi]}}}}`` plus ``_all`` (every scored row pooled,
    see :func:`gold_metrics`) and ``_unscored`` counts. Keys starting with ``_`` are not sources."""
    out = {}
    for name, rows in systems.items():
        out[name] = gold_metrics(rows, ci=True, n_boot=n_boot, seed=seed, pooled=True)
        if unscored := unscored_counts(rows):
            out[name]["_unscored"] = unscored
    return out


def constraint_type_report(systems: dict[str, list[dict]]) -> dict[str, dict]:
    """Per system with rows of a constraint source (``ifeval``): IFEval's instruction-level accuracy per constraint
    type, ``{system: {instruction id: {"n", "strict", "loose"}}}`` (:func:`citing_trl.evaluation.ifeval.accuracy`)."""
    out = {}
    for name, rows in systems.items():
        mine = [r for r in rows if r.get("source") in CONSTRAINT_SOURCES]
        if mine:
            out[name] = ifeval.accuracy(mine)["per_type"]
    return out


def constraint_type_lines(types: dict[str, dict]) -> list[str]:
    """A markdown table: one row per constraint type, strict / loose instruction-level % per system."""
    systems = list(types)
    ids = sorted({i for per in types.values() for i in per})
    lines = ["| constraint type | n | " + " | ".join(f"{s} strict | {s} loose" for s in systems) + " |",
             "|---|---:|" + "---:|---:|" * len(systems)]
    for i in ids:
        n = max(types[s].get(i, {}).get("n", 0) for s in systems)
        cells = [f"{100 * types[s][i]['strict']:.1f} | {100 * types[s][i]['loose']:.1f}" if i in types[s] else " | "
                 for s in systems]
        lines.append(f"| {i} | {n} | " + " | ".join(cells) + " |")
    return lines


SPLIT_METRICS = ("HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1")
"""SQuAD v2 / QuAC's official split: the answerable (HasAns) and unanswerable (NoAns) rows scored apart."""


def _correct(row: dict) -> bool | None:
    return is_correct(row["source"], row["response"], row["answers"], row["input"])


def _source_order(keys) -> list[str]:
    return sorted(keys, key=lambda k: (k == "_all", k))


def _matched(systems: dict[str, list[dict]], after: str, before: str):
    """(row of ``before``, row of ``after``) for every id both answered, in ``after``'s order."""
    old = {r["id"]: r for r in systems[before]}
    return [(old[r["id"]], r) for r in systems[after] if r["id"] in old]


def paired_gold_report(systems: dict[str, list[dict]], comparisons: Sequence[tuple[str, str, str]],
                       n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired gold comparisons: for each ``(label, after, before)`` the rows both systems answered (matched by
    id) that have gold, per source and pooled (``_all``): :func:`~citing_trl.evaluation.paired.paired_gold`
    (``diff`` = after - before with its paired CI, fixed/broken, exact McNemar p, detectable difference) plus
    ``chance`` (:func:`~citing_trl.evaluation.gold.chance_level` on those rows; pooled: weighted by rows) and
    ``at_chance`` {"after", "before"}: whether each system's accuracy interval on those rows reaches down to
    it. ``{label: {"after", "before", source | "_all": {...}}}``; a comparison without gold rows is left out."""
    out = {}
    for label, after, before in comparisons:
        per: dict[str, list] = defaultdict(list)
        for old, new in _matched(systems, after, before):
            x, y = _correct(old), _correct(new)
            if x is not None and y is not None:
                for key in (new["source"], "_all"):
                    per[key].append((old, new, x, y))
        if not per:
            continue
        entry: dict = {"after": after, "before": before}
        levels = {}
        for key in _source_order(per):
            items = per[key]
            stats = paired_gold([i[2] for i in items], [i[3] for i in items], n_boot=n_boot, seed=seed)
            if key == "_all":
                sources = [k for k in per if k != "_all"]
                chance = ({"level": sum(levels[k] * len(per[k]) for k in sources) / len(items),
                           "rule": "per-source chance levels weighted by rows"}
                          if all(k in levels for k in sources) else None)
            else:
                chance = chance_level(key, [i[1] for i in items])
                if chance is not None:
                    levels[key] = chance["level"]
            if chance is not None:
                stats["chance"] = chance
                stats["at_chance"] = {
                    side: bootstrap_ci([float(i[col]) for i in items], n_boot=n_boot, seed=seed)[0] <= chance["level"]
                    for side, col in (("after", 3), ("before", 2))}
            entry[key] = stats
        out[label] = entry
    return out


def paired_reference_report(systems: dict[str, list[dict]], comparisons: Sequence[tuple[str, str, str]],
                            n_boot: int = 2000, seed: int = 0) -> dict:
    """For rows WITHOUT a gold metric that carry a reference answer (the demo set, Alpaca): the paired difference
    of token-overlap F1 with the reference (:func:`~citing_trl.evaluation.gold.reference_overlap`, a proxy for
    closeness to the reference, not correctness), per source and pooled: ``{label: {"after", "before",
    source | "_all": paired_scores}}``; comparisons without such rows are left out."""
    out = {}
    for label, after, before in comparisons:
        per: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        for old, new in _matched(systems, after, before):
            if _correct(new) is not None or _correct(old) is not None:
                continue
            x, y = reference_overlap(old["response"], new["answers"]), reference_overlap(new["response"], new["answers"])
            if x is not None and y is not None:
                for key in (new["source"], "_all"):
                    per[key][0].append(x)
                    per[key][1].append(y)
        if per:
            out[label] = {"after": after, "before": before,
                          **{k: paired_scores(*per[k], n_boot=n_boot, seed=seed) for k in _source_order(per)}}
    return out


def _src(key: str) -> str:
    return "all (pooled)" if key == "_all" else key


def chance_lines(gold: dict) -> list[str]:
    """One sentence per source (and the pool) naming the systems whose primary metric is not above its chance
    level there (``at_chance``), with their values, the level and its rule."""
    flagged: dict[str, list[str]] = defaultdict(list)
    chance: dict[str, dict] = {}
    for system, sources in gold.items():
        if system.startswith("_"):
            continue
        for source, m in sources.items():
            if source == "_unscored" or not m.get("at_chance"):
                continue
            metric = "correct" if source == "_all" else ("accuracy" if "accuracy" in m else "answer_in_response")
            lo, hi = m["ci"][metric]
            flagged[source].append(f"{system} {pct(m[metric])}% [{pct(lo)}, {pct(hi)}]")
            chance.setdefault(source, m["chance"])
    return [f"at chance on {_src(source)} (chance {pct(chance[source]['level'])}%: {chance[source]['rule']}): "
            f"{'; '.join(names)} - 95% CI down to the chance level: not distinguishable from a system that "
            "knows nothing there"
            for source, names in sorted(flagged.items(), key=lambda kv: (kv[0] == "_all", kv[0]))]


def paired_gold_lines(paired: dict) -> list[str]:
    """The markdown table of :func:`paired_gold_report`."""
    lines = ["| comparison | source | n | chance % | first % | second % | diff pts | 95% CI | fixed | broken | "
             "McNemar p | detectable ± pts | note |", "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for label, entry in paired.items():
        for key, m in entry.items():
            if key in ("after", "before"):
                continue
            lo, hi = m["ci"]
            lines.append(f"| {label} | {_src(key)} | {m['n']} | {pct(m.get('chance', {}).get('level'))} | "
                         f"{pct(m['after'])} | {pct(m['before'])} | {signed(m['diff'])} | {signed(lo)} to "
                         f"{signed(hi)} | {m['fixed']} | {m['broken']} | {p_value(m['mcnemar_p'])} | {pct(m['mde'])} | "
                         f"{chance_note(m, entry['after'], entry['before'])} |")
    return lines


def chance_note(m: dict, after: str, before: str) -> str:
    """Words for a paired row whose systems are at chance (see :func:`paired_gold_report`)."""
    flags = m.get("at_chance") or {}
    if flags.get("after") and flags.get("before"):
        return "both at chance"
    if flags.get("after") or flags.get("before"):
        return f"{after if flags.get('after') else before} at chance"
    return ""


def paired_reference_lines(paired: dict) -> list[str]:
    """The markdown table of :func:`paired_reference_report`."""
    lines = ["| comparison | source | n | first F1 % | second F1 % | diff pts | 95% CI | first higher | second higher "
             "| equal | sign p |", "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for label, entry in paired.items():
        for key, m in entry.items():
            if key in ("after", "before"):
                continue
            lo, hi = m["ci"]
            lines.append(f"| {label} | {_src(key)} | {m['n']} | {pct(m['after'])} | {pct(m['before'])} | "
                         f"{signed(m['diff'])} | {signed(lo)} to {signed(hi)} | {m['higher']} | {m['lower']} | "
                         f"{m['equal']} | {p_value(m['sign_p'])} |")
    return lines


PAIRED_NOTE = ("Paired: the rows both systems answered, matched by id. diff = first - second in points with a "
               "paired bootstrap 95% CI (row indices resampled jointly); fixed = rows the first gets right and the "
               "second wrong, broken = the reverse; McNemar p = exact two-sided binomial test on fixed vs broken "
               "(1 when there are none); detectable ± = the smallest true difference these rows detect with 80% "
               "power at 5%, 2.80 * sqrt(p_disc / n) with p_disc the observed share of rows where the two differ "
               "(at least one row); chance = what a system that knows nothing scores on these rows (majority answer "
               "for yes/no, 1/k for k options, always abstaining for SQuAD v2 / QuAC, 0 for open QA); "
               "\"at chance\" = that system's 95% CI reaches down to the chance level.")


def gold_markdown(gold: dict) -> str:
    """``gold.md``: the paired differences (``gold["_paired"]``, and ``gold["_reference_overlap"]`` for rows
    without gold) first, then every system's own metrics with chance levels, then the at-chance sentences."""
    lines = ["# Gold-answer metrics", ""]
    if gold.get("_paired"):
        lines += ["## Paired differences against the reference", "", PAIRED_NOTE, "",
                  *paired_gold_lines(gold["_paired"]), ""]
    if gold.get("_reference_overlap"):
        lines += ["## Rows without gold: token overlap with the reference answer", "",
                  "These rows have a reference answer but no gold metric. Token-overlap F1 with the reference "
                  "(SQuAD normalisation) is a proxy for closeness to it, not correctness. diff = first - second, "
                  "paired bootstrap 95% CI; sign p = exact sign test on the rows where one scores higher.", "",
                  *paired_reference_lines(gold["_reference_overlap"]), ""]
    lines += ["## Each system", "",
              "Values are percentages with a 95% percentile bootstrap interval over rows; n = rows scored. "
              "Definitions: `citing_trl/evaluation/gold.py` (SQuAD v2 / EfficientQA / TriviaQA official EM-F1; "
              "`answer_in_response` is the lenient containment column; `accuracy` is read from free text by the "
              "extraction rule in `extract_choice` / `extract_yes_no`; `answered` is the share of responses with "
              "an extractable answer; SQuAD v2 / QuAC also as the official script splits them, `HasAns_*` on "
              "answerable rows and `NoAns_*` on unanswerable ones, n = their count). `all (pooled)`: every scored "
              "row, `correct` = right under its source's primary metric (`is_correct`: accuracy, or "
              "`answer_in_response` for open QA). `chance` (on the primary metric's row): what a system that knows "
              "nothing scores on these rows; `at chance` = the 95% CI reaches down to it.", ""]
    lines += ["| system | source | n | metric | value | 95% CI | chance | at chance |",
              "|---|---|---:|---|---:|---|---:|---|"]
    unscored = []
    for system, sources in gold.items():
        if system.startswith("_"):
            continue
        for source, m in sources.items():
            if source == "_unscored":
                unscored.append(f"{system}: " + ", ".join(f"{s} {c}" for s, c in m.items()))
                continue
            primary = "correct" if source == "_all" else primary_metric(m)
            metrics = ["correct"] if source == "_all" else [*METRICS[source], *(k for k in SPLIT_METRICS if k in m)]
            for metric in metrics:
                lo, hi = m["ci"][metric]
                n = m[f"{metric.split('_')[0]}_total"] if metric in SPLIT_METRICS else m["n"]
                chance, flag = "", ""
                if metric == primary and "chance" in m:
                    chance = pct(m["chance"]["level"])
                    flag = "yes" if m.get("at_chance") else "no"
                lines.append(f"| {system} | {_src(source)} | {n} | {metric} | "
                             f"{100 * m[metric]:.1f} | {100 * lo:.1f}-{100 * hi:.1f} | {chance} | {flag} |")
    if gold.get("_constraint_types"):
        lines += ["", "## Constraint types (IFEval instruction-level accuracy, %)", "",
                  *constraint_type_lines(gold["_constraint_types"])]
    if at_chance := chance_lines(gold):
        lines += ["", "## At chance", "", "A pooled number includes these sources; read it with them in mind.", "",
                  *(f"- {line}" for line in at_chance)]
    if unscored:
        lines += ["", "Rows without a gold metric (source has none, or no gold answers): " + "; ".join(unscored)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# Pairwise tables
# ------------------------------------------------------------------------------------------------

TABLE_COLUMNS = ["comparison", "family", "aspect", "n", "unparsed", "win_pct", "tie_pct", "lose_pct",
                 "win_ci_low_pct", "win_ci_high_pct", "pref_pct", "lc_win_pct", "lc_separated", "lc_low_pct", "lc_high_pct", "mean_len_ref", "mean_len_other",
                 "net_pct", "net_ci_low_pct", "net_ci_high_pct", "sign_p", "mde_pct"]


def pairwise_rows(comparison: str, judged: Sequence[dict], aspects: Sequence[str], n_boot: int = 2000,
                  seed: int = 0) -> list[dict]:
    """Table rows for one comparison (reference vs other). ``judged``: one dict per pair with ``family``,
    ``verdicts`` {aspect: "a" (reference wins) | "b" | "tie" | "unparsed"}, ``len_ref``, ``len_other``.

    Per family (and ``all`` when there are several) and aspect: ``n`` readable verdicts, ``unparsed`` (left
    out), win/tie/lose % of the reference, a paired bootstrap 95% CI of the win % (pairs resampled),
    ``pref_pct`` = win % + tie % / 2, ``lc_win_pct`` = its length-controlled version
    (:func:`~citing_trl.evaluation.stats.length_controlled`), and the mean answer lengths in words over all
    pairs of the group. Paired statistics of the verdicts (:func:`~citing_trl.evaluation.paired.paired_verdicts`):
    ``net_pct`` = win % - lose %, its paired bootstrap 95% CI (``net_ci_low_pct``/``net_ci_high_pct``, pairs
    resampled), ``sign_p`` = exact two-sided sign test of wins against losses (ties left out) and ``mde_pct``,
    the smallest net difference the pairs detect. When every win and loss agrees with which answer is longer, the LC rate is not
    determined by the data: ``lc_separated`` is True and ``lc_low_pct``/``lc_high_pct`` = 0/100 (otherwise
    False and None); ``lc_win_pct`` keeps the regularised fit, but the tables print the interval instead."""
    families = sorted({j["family"] for j in judged})
    groups = [(f, [j for j in judged if j["family"] == f]) for f in families]
    if len(families) > 1:
        groups.append(("all", list(judged)))
    rows = []
    for family, group in groups:
        for aspect in aspects:
            ok = [j for j in group if j["verdicts"][aspect] != "unparsed"]
            counts = Counter(j["verdicts"][aspect] for j in ok)
            n = len(ok)
            share = (lambda k, counts=counts, n=n: 100 * counts[k] / n) if n else (lambda k: float("nan"))  # % parsed
            wins = [1.0 if j["verdicts"][aspect] == "a" else 0.0 for j in ok]
            lo, hi = bootstrap_ci(wins, n_boot=n_boot, seed=seed)
            prefs = [{"a": 1.0, "tie": 0.5, "b": 0.0}[j["verdicts"][aspect]] for j in ok]
            lc = length_controlled(prefs, [j["len_ref"] - j["len_other"] for j in ok])
            net = paired_verdicts([j["verdicts"][aspect] for j in ok], n_boot=n_boot, seed=seed)
            rows.append({
                "comparison": comparison, "family": family, "aspect": aspect, "n": n,
                "unparsed": len(group) - n, "win_pct": share("a"), "tie_pct": share("tie"), "lose_pct": share("b"),
                "win_ci_low_pct": 100 * lo, "win_ci_high_pct": 100 * hi,
                "pref_pct": share("a") + share("tie") / 2 if n else float("nan"), "lc_win_pct": 100 * lc.value,
                "lc_separated": lc.separated, "lc_low_pct": None if lc.low is None else 100 * lc.low,
                "lc_high_pct": None if lc.high is None else 100 * lc.high,
                "mean_len_ref": sum(j["len_ref"] for j in group) / len(group),
                "mean_len_other": sum(j["len_other"] for j in group) / len(group),
                "net_pct": 100 * net["net"], "net_ci_low_pct": 100 * net["ci"][0], "net_ci_high_pct": 100 * net["ci"][1],
                "sign_p": net["sign_p"], "mde_pct": 100 * net["mde"],
            })
    return rows


def lc_cell(row: dict) -> str:
    """The LC win % as a table shows it: the value, or "undetermined (LOW-HIGH)" when the verdicts are
    separated by length (see :func:`pairwise_rows`)."""
    if row.get("lc_separated"):
        return f"undetermined ({cell(row['lc_low_pct'])}-{cell(row['lc_high_pct'])})"
    return cell(row["lc_win_pct"])


def net_cell(row: dict) -> str:
    """win % - lose % and its paired 95% CI, as the tables print it."""
    if row.get("net_pct") is None or row["net_pct"] != row["net_pct"]:
        return "-"
    return f"{row['net_pct']:+.1f} ({row['net_ci_low_pct']:+.1f} to {row['net_ci_high_pct']:+.1f})"


def table_markdown(title: str, rows: list[dict], notes: Sequence[str] = ()) -> str:
    head = ["comparison", "family", "aspect", "n", "win %", "tie %", "lose %", "win 95% CI", "win-lose pts (95% CI)",
            "sign p", "LC win %", "unparsed", "len ref", "len other"]
    lines = [f"# {title}", "", *notes, "" if notes else "", "| " + " | ".join(head) + " |",
             "|" + "|".join("---" if i < 3 else "---:" for i in range(len(head))) + "|"]
    for r in rows:
        ci = f"{cell(r['win_ci_low_pct'])}-{cell(r['win_ci_high_pct'])}"
        cells = [r["comparison"], r["family"], r["aspect"], r["n"], r["win_pct"], r["tie_pct"], r["lose_pct"], ci,
                 net_cell(r), p_value(r.get("sign_p")), lc_cell(r), r["unparsed"], r["mean_len_ref"],
                 r["mean_len_other"]]
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TABLE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def steps_markdown(extra: dict) -> str:
    """Table 2's gold part: the primary metric per step and source, and fix/break counts between steps."""
    lines = ["", "## Gold answers per step", "", "| system | source | n | metric | value % |", "|---|---|---:|---|---:|"]
    for system, sources in extra.get("gold", {}).items():
        for source, m in sources.items():
            if not source.startswith("_") or source == "_all":
                metric = next(k for k in ("correct", "accuracy", "answer_in_response") if k in m)
                lines.append(f"| {system} | {'all' if source == '_all' else source} | {m['n']} | {metric} | "
                             f"{100 * m[metric]:.1f} |")
    lines += ["", "## Fixed / broken between consecutive steps (primary correctness, `is_correct`)", "",
              "| comparison | source | wrong->right | right->wrong | right->right | wrong->wrong | no gold |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for comparison, per in extra.get("fix_break", {}).items():
        for source, c in per.items():
            lines.append(f"| {comparison} | {source} | {c['wrong_to_right']} | {c['right_to_wrong']} | "
                         f"{c['right_to_right']} | {c['wrong_to_wrong']} | {c['no_gold']} |")
    if extra.get("paired"):
        lines += ["", "## Paired gold differences between consecutive steps", "", PAIRED_NOTE, "",
                  *paired_gold_lines(extra["paired"])]
    return "\n".join(lines) + "\n"


def write_table(out_dir: Path, stem: str, title: str, rows: list[dict], extra: dict | None = None,
                notes: Sequence[str] = ()) -> None:
    text = table_markdown(title, rows, notes) if rows else f"# {title}\n"
    if extra and ("fix_break" in extra or "gold" in extra or "paired" in extra):
        text += steps_markdown(extra)
    (out_dir / f"{stem}.md").write_text(text)
    (out_dir / f"{stem}.csv").write_text(table_csv(rows))
    (out_dir / f"{stem}.json").write_text(strict_json({"rows": rows, **(extra or {})}, indent=2) + "\n")


def step_fix_break(systems: dict[str, list[dict]], order: Sequence[str]) -> dict[str, dict]:
    """Correctness changes between consecutive systems (rounds or self-revision steps), on ids both have,
    per source and in total: ``{"NEW vs OLD": {source | "all": fix_break counts}}``."""
    out = {}
    for old, new in zip(order, order[1:]):
        before = {r["id"]: r for r in systems[old]}
        per: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        for r in systems[new]:
            if r["id"] not in before:
                continue
            b = before[r["id"]]
            for key in (r["source"], "all"):
                per[key][0].append(is_correct(b["source"], b["response"], b["answers"], b["input"]))
                per[key][1].append(is_correct(r["source"], r["response"], r["answers"], r["input"]))
        out[f"{new} vs {old}"] = {k: fix_break(*v) for k, v in sorted(per.items())}
    return out


# ------------------------------------------------------------------------------------------------
# Figure 2
# ------------------------------------------------------------------------------------------------


def plot_fig2(rows: list[dict], path: str | Path, aspects: Sequence[str]):
    """Grouped win / tie / lose bars like the paper's Figure 2: one panel per comparison (row) and aspect
    (column), one group of three bars per source family. Returns the matplotlib figure (closed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comparisons = list(dict.fromkeys(r["comparison"] for r in rows))
    families = list(dict.fromkeys(r["family"] for r in rows if r["family"] != "all")) or ["all"]
    fig, axes = plt.subplots(len(comparisons), len(aspects), squeeze=False,
                             figsize=(3.2 * len(aspects) + 0.6 * len(families), 2.6 * len(comparisons) + 0.6))
    colours = {"win": "#2b8cbe", "tie": "#bdbdbd", "lose": "#e34a33"}
    width = 0.26
    for ci, comparison in enumerate(comparisons):
        for ai, aspect in enumerate(aspects):
            ax = axes[ci][ai]
            by_family = {r["family"]: r for r in rows if r["comparison"] == comparison and r["aspect"] == aspect}
            for k, outcome in enumerate(("win", "tie", "lose")):
                values = [by_family.get(f, {}).get(f"{outcome}_pct", float("nan")) for f in families]
                values = [0.0 if v != v else v for v in values]
                ax.bar([x + (k - 1) * width for x in range(len(families))], values, width, label=outcome,
                       color=colours[outcome])
            ax.set_xticks(range(len(families)), [f.replace("_", "\n") for f in families], fontsize=7)
            ax.set_ylim(0, 100)
            ax.set_title(f"{comparison}\n{aspect}" if ai == 0 else aspect, fontsize=8)
            if ai == 0:
                ax.set_ylabel("% of pairs")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.suptitle("win / tie / lose of the first-named system, % of judged pairs", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return fig
