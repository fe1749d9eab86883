"""Paired statistics (exact McNemar / sign test, paired bootstrap, detectable difference), chance levels and the
at-chance flag, the SQuAD v2 HasAns/NoAns split, the paired tables in the reports and the printout's order."""

import io
import json
import math
import re

import numpy as np
import pytest
from rich.console import Console
from test_evaluation_judge import prefers_good  # noqa: E402

from citing_trl.data import NO_ANSWER
from citing_trl.evaluation.config import EvaluationArguments, JudgeArguments, judge_config
from citing_trl.evaluation.gold import chance_level, gold_metrics, has_answer, reference_overlap
from citing_trl.evaluation.paired import (
    binomial_two_sided,
    mcnemar_exact,
    min_detectable_difference,
    paired_bootstrap_ci,
    paired_gold,
    paired_scores,
    paired_verdicts,
    sign_test,
)
from citing_trl.evaluation.reports import pairwise_rows
from citing_trl.evaluation.runner import print_summary, run_evaluation
from tests.helpers.fault_server import FaultServer

OPTS = "A. red\nB. blue\nC. green\nD. black\nE. white"


# ------------------------------------------------------------------------------------------------
# Exact tests, worked by hand
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("b, c, p", [
    (0, 5, 0.0625),            # 2 * (1/2)^5
    (5, 0, 0.0625),            # symmetric
    (1, 9, 0.021484375),       # 2 * (1 + 10) / 1024 = 22/1024
    (4, 4, 1.0),               # b = c: 2 * P[X <= 4] = 2 * 143/256 > 1 -> 1
    (7, 7, 1.0),
    (0, 0, 1.0),               # no discordant row
    (2, 8, 0.109375),          # 2 * (1 + 10 + 45) / 1024 = 112/1024
    (0, 1, 1.0),               # 2 * 1/2
])
def test_mcnemar_exact_by_hand(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, abs=1e-12)


def test_sign_test_is_the_same_binomial_and_bad_counts_are_refused():
    assert sign_test(9, 1) == pytest.approx(22 / 1024) and sign_test(3, 3) == 1.0
    assert binomial_two_sided(0, 20) == pytest.approx(2 / 2 ** 20)
    with pytest.raises(ValueError):
        binomial_two_sided(5, 3)


def test_paired_gold_counts_diff_and_test():
    # 10 rows: 1 wrong->right, 9 right->wrong, plus 3 right->right, 2 wrong->wrong and 1 without gold
    before = [False] + [True] * 9 + [True] * 3 + [False] * 2 + [None]
    after = [True] + [False] * 9 + [True] * 3 + [False] * 2 + [True]
    out = paired_gold(before, after, n_boot=500)
    assert out["n"] == 15 and (out["fixed"], out["broken"]) == (1, 9)
    assert out["fix_break"] == {"wrong_to_right": 1, "right_to_wrong": 9, "right_to_right": 3, "wrong_to_wrong": 2,
                                "no_gold": 1}
    assert out["before"] == pytest.approx(12 / 15) and out["after"] == pytest.approx(4 / 15)
    assert out["diff"] == pytest.approx(-8 / 15)
    assert out["mcnemar_p"] == pytest.approx(22 / 1024)
    lo, hi = out["ci"]
    assert lo <= -8 / 15 <= hi < 0  # a clear loss: the interval excludes 0
    # detectable difference: 2.80 * sqrt((10/15) / 15)
    assert out["mde"] == pytest.approx((1.959964 + 0.841621) * math.sqrt(10 / 15 / 15), rel=1e-5)


def test_paired_bootstrap_resamples_rows_jointly():
    # the second system is right exactly where the first is, plus 2 more rows out of 100: every joint resample
    # gives a difference >= 0, while two independent intervals (0.30-0.50 and 0.32-0.52) overlap almost fully
    before = [1.0] * 40 + [0.0] * 60
    after = [1.0] * 42 + [0.0] * 58
    lo, hi = paired_bootstrap_ci(before, after, n_boot=2000, seed=3)
    assert 0.0 <= lo and hi <= 0.06
    # identical systems: a zero-width interval
    assert paired_bootstrap_ci(before, before) == (0.0, 0.0)
    # seeded: the same interval twice, a different one with another seed
    x, y = [0, 1, 1, 0, 1, 0, 0, 1], [1, 1, 0, 0, 1, 1, 0, 1]
    assert paired_bootstrap_ci(x, y, seed=1) == paired_bootstrap_ci(x, y, seed=1)
    with pytest.raises(ValueError):
        paired_bootstrap_ci([1.0], [1.0, 0.0])
    assert all(v != v for v in paired_bootstrap_ci([], []))


def test_detectable_difference_formula():
    assert min_detectable_difference(400) == pytest.approx(2.8016 / 20, rel=1e-4)  # worst case: 14 points
    assert min_detectable_difference(300, 0.04) == pytest.approx(0.0324, abs=5e-4)  # the 300 rows
    assert min_detectable_difference(4) == 1.0  # capped: 4 rows cannot detect anything
    no_discordant = paired_gold([True, False] * 50, [True, False] * 50)
    assert no_discordant["mde"] == pytest.approx(min_detectable_difference(100, 1 / 100))  # floor of one row


def test_paired_verdicts_net_share_and_sign_test():
    out = paired_verdicts(["a"] * 9 + ["b"] + ["tie"] * 5 + ["unparsed"] * 3, n_boot=500)
    assert (out["n"], out["wins"], out["losses"], out["ties"]) == (15, 9, 1, 5)
    assert out["net"] == pytest.approx(8 / 15) and out["sign_p"] == pytest.approx(22 / 1024)
    assert out["ci"][0] > 0
    ties = paired_verdicts(["tie"] * 4)
    assert ties["net"] == 0 and ties["sign_p"] == 1.0 and ties["ci"] == [0.0, 0.0]


def test_judge_tables_carry_the_paired_columns():
    rows = [{"family": "f", "verdicts": {"articulate": v, "in-depth": "tie", "comprehensive": "b"},
             "len_ref": 5, "len_other": 5} for v in ["a"] * 9 + ["b"]]
    table = {r["aspect"]: r for r in pairwise_rows("x vs y", rows, ["articulate", "in-depth", "comprehensive"],
                                                   n_boot=200)}
    assert table["articulate"]["net_pct"] == pytest.approx(80.0)
    assert table["articulate"]["sign_p"] == pytest.approx(22 / 1024)
    assert table["in-depth"]["sign_p"] == 1.0 and table["in-depth"]["net_pct"] == 0.0
    assert table["comprehensive"]["net_pct"] == -100.0 and table["comprehensive"]["net_ci_high_pct"] == -100.0


def test_paired_scores_for_reference_overlap():
    out = paired_scores([0.2, 0.5, 0.5, 0.1], [0.4, 0.5, 0.3, 0.6], n_boot=200)
    assert (out["higher"], out["lower"], out["equal"]) == (2, 1, 1)
    assert out["diff"] == pytest.approx(0.125) and out["sign_p"] == 1.0
    assert reference_overlap("the cat sat", ["A cat sat down."]) == pytest.approx(0.8)
    assert reference_overlap("anything", []) is None


# ------------------------------------------------------------------------------------------------
# Chance levels, the at-chance flag, HasAns / NoAns
# ------------------------------------------------------------------------------------------------


def test_chance_levels_per_source_kind():
    boolq = [{"answers": [a]} for a in ["yes"] * 7 + ["no"] * 3]
    assert chance_level("boolq", boolq)["level"] == pytest.approx(0.7)
    assert "'yes'" in chance_level("boolq", boolq)["rule"]
    csqa = [{"answers": ["B. blue"], "input": OPTS}] * 3 + [{"answers": ["A. x"], "input": "A. x\nB. y"}]
    assert chance_level("commonsense_qa", csqa)["level"] == pytest.approx((3 * 0.2 + 0.5) / 4)
    assert chance_level("commonsense_qa", [{"answers": ["B. blue"], "input": ""}]) is None  # k unknown
    squad = [{"answers": [NO_ANSWER]}] * 3 + [{"answers": ["Paris"]}, {"answers": ["Rome"]}]
    assert chance_level("squad_v2", squad)["level"] == pytest.approx(0.6)
    assert "abstain" in chance_level("squad_v2", squad)["rule"]
    mostly_paris = [{"answers": ["Paris"]}] * 4 + [{"answers": [NO_ANSWER]}]  # always "Paris" beats abstaining
    assert chance_level("quac", mostly_paris)["level"] == pytest.approx(0.8)
    assert chance_level("nq_open", [{"answers": ["Paris"]}])["level"] == 0.0
    assert chance_level("trivia_qa", [{"answers": ["Paris"]}])["level"] == 0.0
    assert chance_level("alpaca", [{"answers": ["text"]}]) is None


def test_at_chance_flag():
    # BoolQ with 8 of 10 "yes": answering "yes" everywhere is at chance, 10 of 10 right is not
    rows = [{"source": "boolq", "answers": [a], "input": ""} for a in ["yes"] * 8 + ["no"] * 2]
    always_yes = gold_metrics([dict(r, response="Yes.") for r in rows], ci=True, n_boot=500, pooled=True)
    perfect = gold_metrics([dict(r, response=r["answers"][0]) for r in rows], ci=True, n_boot=500, pooled=True)
    assert always_yes["boolq"]["chance"]["level"] == pytest.approx(0.8)
    assert always_yes["boolq"]["at_chance"] is True and always_yes["_all"]["at_chance"] is True
    assert perfect["boolq"]["at_chance"] is False
    # below chance is at chance too; open QA's chance is 0, so only an all-wrong system is flagged there
    below = gold_metrics([dict(r, response="No.") for r in rows], ci=True, n_boot=500)
    assert below["boolq"]["at_chance"] is True
    nq = [{"source": "nq_open", "answers": ["Paris"], "input": "", "response": resp} for resp in ["Paris", "Lyon"] * 10]
    assert gold_metrics(nq, ci=True, n_boot=500)["nq_open"]["at_chance"] is False
    assert gold_metrics([dict(r, response="Lyon") for r in nq], ci=True)["nq_open"]["at_chance"] is True


def test_squad_v2_has_ans_no_ans_split():
    rows = [  # 3 answerable, 2 unanswerable, as the official script splits them
        {"source": "squad_v2", "answers": ["Denver Broncos"], "response": "Denver Broncos"},       # EM 1
        {"source": "squad_v2", "answers": ["Denver Broncos"], "response": "the Broncos"},          # EM 0, F1 2/3
        {"source": "squad_v2", "answers": ["Santa Clara"], "response": NO_ANSWER},                # 0, 0
        {"source": "squad_v2", "answers": [NO_ANSWER], "response": NO_ANSWER},                    # 1, 1
        {"source": "squad_v2", "answers": [NO_ANSWER], "response": "Levi's Stadium"},             # 0, 0
    ]
    m = gold_metrics(rows, ci=True, n_boot=200)["squad_v2"]
    assert (m["HasAns_total"], m["NoAns_total"]) == (3, 2)
    assert m["HasAns_exact"] == pytest.approx(1 / 3) and m["HasAns_f1"] == pytest.approx((1 + 2 / 3) / 3)
    assert m["NoAns_exact"] == 0.5 and m["NoAns_f1"] == 0.5
    assert m["exact_match"] == pytest.approx(2 / 5)  # the whole = the parts weighted by their counts
    assert "HasAns_exact" in m["ci"] and "NoAns_f1" in m["ci"]
    assert has_answer("squad_v2", [NO_ANSWER]) is False and has_answer("boolq", ["yes"]) is None
    only_answerable = gold_metrics(rows[:2])["squad_v2"]
    assert only_answerable["NoAns_total"] == 0 and "NoAns_exact" not in only_answerable
    assert "HasAns_total" not in gold_metrics([{"source": "boolq", "answers": ["yes"], "response": "yes"}])["boolq"]


# ------------------------------------------------------------------------------------------------
# The reports and the printout
# ------------------------------------------------------------------------------------------------


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _qa_files(tmp_path):
    """citing (r(0), r(1)) and sft on 10 BoolQ rows and 10 SQuAD v2 rows; the right answers contain GOOD."""
    citing, sft = [], []
    for i in range(10):
        gold = "yes" if i < 6 else "no"
        row = {"id": f"b{i}", "source": "boolq", "instruction": "q?", "input": "", "answers": [gold]}
        # r(0) right on 0-5, r(1) right on 0-8 (3 fixed), sft right on 0-3 and 9
        citing.append(dict(row, responses=["yes", "yes GOOD" if i < 6 else ("no GOOD" if i < 9 else "yes")]))
        sft.append(dict(row, response=("yes GOOD" if i < 4 else "no") if i < 6 else ("no GOOD" if i == 9 else "yes")))
    for i in range(10):
        gold = ["Paris"] if i < 5 else [NO_ANSWER]
        row = {"id": f"s{i}", "source": "squad_v2", "instruction": "q?", "input": "ctx", "answers": gold}
        citing.append(dict(row, responses=[NO_ANSWER, NO_ANSWER]))
        sft.append(dict(row, response="Paris"))
    return _write(tmp_path / "citing.jsonl", citing), _write(tmp_path / "sft.jsonl", sft)


def _strict(text):
    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")
    return json.loads(text, parse_constant=refuse)


def test_gold_reports_carry_the_paired_tables(tmp_path):
    citing, sft = _qa_files(tmp_path)
    out = tmp_path / "out"
    args = EvaluationArguments(answers=[f"citing={citing}", f"sft={sft}"], reference="citing", output_dir=str(out),
                               bootstrap_samples=300)
    run_evaluation(args, judge_config(args, JudgeArguments(judge_backend="none")))
    gold = _strict((out / "gold.json").read_text())
    boolq = gold["_paired"]["citing vs sft"]["boolq"]
    # citing (= r(1)) right on 0-8, sft right on 0-3 and 9: 5 fixed (4-8), 1 broken (9)
    assert (boolq["n"], boolq["fixed"], boolq["broken"]) == (10, 5, 1)
    assert boolq["diff"] == pytest.approx(0.4) and boolq["mcnemar_p"] == pytest.approx(14 / 64)
    assert boolq["chance"]["level"] == pytest.approx(0.6)
    squad = gold["_paired"]["citing vs sft"]["squad_v2"]
    assert (squad["fixed"], squad["broken"], squad["diff"]) == (5, 5, 0.0) and squad["mcnemar_p"] == 1.0
    assert squad["at_chance"] == {"after": True, "before": True}  # both score exactly the abstain share
    pooled = gold["_paired"]["citing vs sft"]["_all"]
    assert (pooled["n"], pooled["fixed"], pooled["broken"]) == (20, 10, 6)
    assert gold["_paired"]["citing@0 vs sft"]["boolq"]["after"] == pytest.approx(0.6)  # earlier step vs sft
    assert gold["citing"]["squad_v2"]["NoAns_exact"] == 1.0 and gold["citing"]["squad_v2"]["HasAns_exact"] == 0.0
    assert gold["sft"]["squad_v2"]["HasAns_total"] == 5
    md = (out / "gold.md").read_text()
    assert md.index("## Paired differences against the reference") < md.index("## Each system")
    assert "| citing vs sft | boolq | 10 | 60.0 | 90.0 | 50.0 | +40.0 |" in md
    assert "| citing vs sft | squad_v2 | 10 | 50.0 | 50.0 | 50.0 | +0.0 |" in md and "both at chance" in md
    assert "| sft | squad_v2 | 5 | HasAns_exact | 100.0 |" in md
    assert "at chance on squad_v2" in md
    # Table 2: r(1) vs r(0) paired, with fix/break per step
    t2 = _strict((out / "table2.json").read_text())
    step = t2["paired"]["citing@1 vs citing@0"]["boolq"]
    assert (step["fixed"], step["broken"], step["diff"]) == (3, 0, pytest.approx(0.3))
    assert step["mcnemar_p"] == pytest.approx(0.25)
    assert "## Paired gold differences between consecutive steps" in (out / "table2.md").read_text()


def _printed(summary) -> str:
    buf = io.StringIO()
    print_summary(summary, console=Console(file=buf, width=1000, force_terminal=False))
    return buf.getvalue()


def test_printout_leads_with_the_paired_gold_comparison_and_labels_the_judge(tmp_path):
    citing, sft = _qa_files(tmp_path)
    with FaultServer(reply=prefers_good) as server:
        args = EvaluationArguments(answers=[f"citing={citing}", f"sft={sft}"], reference="citing",
                                   output_dir=str(tmp_path / "out"), bootstrap_samples=200)
        judge = judge_config(args, JudgeArguments(judge_backend="openai", judge_model="judge",
                                                  judge_base_url=server.base_url,
                                                  judge_api_key_env="CITING_TEST_NO_SUCH_KEY"))
        text = _printed(run_evaluation(args, judge))
    lead = text.index("citing vs sft (gold, pooled over 20 rows both answered)")
    paired = text.index("Paired gold differences vs the reference")
    title = re.search(r"Table 1 - judge judge \(openai\), order-consistent on [0-9.]+% of judgements, 20 pairs", text)
    judge_table = title.start()
    assert lead < paired < judge_table
    # the headline (the reference's final answers vs the others) is the last word too
    assert text.rstrip().splitlines()[-1].startswith("citing vs sft (gold, pooled over 20 rows both answered)")
    assert "citing@0 vs sft (gold" not in text  # earlier steps are in the tables, not the headline
    assert text.index("In short") > judge_table


def test_printout_without_gold_says_so_and_compares_reference_overlap(tmp_path):
    # the demo's test rows: source `demo`, a reference answer, no gold metric
    base = [{"id": f"demo-{i}", "source": "demo", "instruction": f"Explain {i}.", "input": "",
             "answers": [f"The capital of country {i} is city {i}, on the river."]} for i in range(6)]
    citing = _write(tmp_path / "citing.jsonl", [dict(r, response=f"The capital is city {i} on the river.")
                                                for i, r in enumerate(base)])
    sft = _write(tmp_path / "sft.jsonl", [dict(r, response="I do not know.") for r in base])
    first_shown = lambda messages: json.dumps({k: "A" for k in ("articulate", "in-depth", "comprehensive")})  # noqa: E731
    with FaultServer(reply=first_shown) as server:  # like the local judge of `make demo`: 0% order-consistent
        args = EvaluationArguments(answers=[f"citing={citing}", f"sft={sft}"], reference="citing",
                                   output_dir=str(tmp_path / "out"), bootstrap_samples=200)
        judge = judge_config(args, JudgeArguments(judge_backend="openai", judge_model="judge",
                                                  judge_base_url=server.base_url,
                                                  judge_api_key_env="CITING_TEST_NO_SUCH_KEY"))
        summary = run_evaluation(args, judge)
    text = _printed(summary)
    lead = text.index("citing vs sft: no gold answers on the 6 rows both answered (source demo)")
    assert "Token overlap with the reference answer" in text and "higher on 6 rows, lower on 0" in text
    table = text.index("Table 1 - judge judge (openai), order-consistent on 0.0% of judgements, 6 pairs")
    assert lead < table < text.index("no evidence either way")
    overlap = _strict((tmp_path / "out" / "gold.json").read_text())["_reference_overlap"]["citing vs sft"]["_all"]
    assert overlap["n"] == 6 and overlap["diff"] > 0 and overlap["sign_p"] == pytest.approx(2 / 64)
    assert "## Rows without gold: token overlap with the reference answer" in (tmp_path / "out" / "gold.md").read_text()
    assert np.isfinite(overlap["ci"][0])


# --------------------------------------------------------------------------------------------------
# One resampler, one set of constants, and agreement with scipy.stats
# --------------------------------------------------------------------------------------------------


def test_constants_are_the_normal_quantiles():
    import scipy.stats as st

    from citing_trl.evaluation.stats import Z_80, Z_975

    assert Z_975 == st.norm.ppf(0.975) and Z_80 == st.norm.ppf(0.80)


def test_paired_interval_is_the_old_numbers_bit_for_bit_and_agrees_with_scipy():
    """The paired interval now shares bootstrap_ci's resampler; its numbers are the former implementation's
    exactly, and scipy.stats.bootstrap (paired, percentile, same generator) agrees to 1e-12."""
    import numpy as np
    import scipy.stats as st

    from citing_trl.evaluation.stats import paired_bootstrap_ci

    rng = np.random.default_rng(0)
    for seed in range(12):
        n = int(rng.integers(2, 60))
        x, y = rng.integers(0, 2, n).astype(float), rng.random(n)
        idx = np.random.default_rng(seed).integers(0, n, size=(500, n))  # the former code, inline
        alpha = (1 - 0.95) / 2
        old = tuple(float(v) for v in np.quantile(y[idx].mean(axis=1) - x[idx].mean(axis=1), [alpha, 1 - alpha]))
        ours = paired_bootstrap_ci(x, y, n_boot=500, seed=seed)
        assert ours == old
        ref = st.bootstrap((x, y), lambda a, b, axis=-1: b.mean(axis=axis) - a.mean(axis=axis), paired=True,
                           vectorized=True, n_resamples=500, method="percentile", rng=np.random.default_rng(seed))
        assert ours == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), abs=1e-12)


def test_exact_binomial_agrees_with_scipy_binomtest():
    """McNemar's and the sign test's p-value is the exact two-sided binomial; scipy.stats.binomtest gives the
    same p-values up to rounding in the last bits (1e-12 relative), so the exact sum is kept."""
    import scipy.stats as st

    for n in range(1, 80):
        for k in range(n + 1):
            assert binomial_two_sided(k, n) == pytest.approx(st.binomtest(k, n, 0.5).pvalue, rel=1e-12)
