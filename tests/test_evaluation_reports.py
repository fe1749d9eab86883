"""Tables 1-2, Figure 2 and recipes/evaluate.py end to end on small answer files."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_evaluation_judge import prefers_good  # noqa: E402

from citing_trl.data import NO_ANSWER
from citing_trl.errors import UserError
from citing_trl.evaluation.config import EvaluationArguments, JudgeArguments, judge_config
from citing_trl.evaluation.reports import (
    AnswersError,
    family_of,
    gold_markdown,
    gold_report,
    pairwise_rows,
    plot_fig2,
    strict_json,
    write_table,
)
from citing_trl.evaluation.runner import run_evaluation
from tests.helpers.batch_server import BatchServer
from tests.helpers.fault_server import FaultServer

REPO = Path(__file__).resolve().parents[1]
ASPECTS = ["articulate", "in-depth", "comprehensive"]


def parsed(**flags):
    """(EvaluationArguments, the judge's TeacherConfig) from recipes/evaluate.py's flags, split as its parser does."""
    judge = {k: flags.pop(k) for k in list(flags) if k in JudgeArguments.__dataclass_fields__}
    args = EvaluationArguments(**flags)
    return args, judge_config(args, JudgeArguments(**judge))

def judged(family, verdicts, len_ref=10, len_other=10):
    return [{"family": family, "verdicts": {"articulate": v, "in-depth": "tie", "comprehensive": "a"},
             "len_ref": len_ref, "len_other": len_other} for v in verdicts]


def test_table_arithmetic_exact_percentages():
    rows = judged("commonsense", ["a", "a", "a", "tie", "tie", "tie", "b", "b", "unparsed"])
    rows += judged("world_knowledge", ["a", "b", "b", "b"], len_ref=20, len_other=5)
    table = pairwise_rows("x vs y", rows, ASPECTS, n_boot=400)
    get = {(r["family"], r["aspect"]): r for r in table}
    c = get[("commonsense", "articulate")]
    assert (c["n"], c["unparsed"]) == (8, 1)
    assert (c["win_pct"], c["tie_pct"], c["lose_pct"]) == (37.5, 37.5, 25.0)  # 3/8, 3/8, 2/8
    assert c["pref_pct"] == 37.5 + 37.5 / 2
    assert c["win_ci_low_pct"] <= 37.5 <= c["win_ci_high_pct"]
    assert c["lc_win_pct"] == pytest.approx(c["pref_pct"], abs=1e-3)  # equal lengths: nothing to control for
    w = get[("world_knowledge", "articulate")]
    assert (w["win_pct"], w["lose_pct"]) == (25.0, 75.0)
    assert w["mean_len_ref"] == 20 and w["mean_len_other"] == 5
    a = get[("all", "articulate")]  # 12 readable: 4 wins, 3 ties, 5 losses
    assert (a["n"], a["unparsed"]) == (12, 1)
    assert a["win_pct"] == pytest.approx(100 * 4 / 12) and a["lose_pct"] == pytest.approx(100 * 5 / 12)
    assert get[("all", "comprehensive")]["win_pct"] == 100.0  # unparsed only on articulate
    assert get[("all", "comprehensive")]["n"] == 13


def test_length_controlled_rate_discounts_longer_winners():
    # the reference wins exactly when it is the longer answer: the preference is explained by length
    rows = judged("alpaca", ["a"] * 6, len_ref=80, len_other=20) + judged("alpaca", ["b"] * 4, len_ref=20, len_other=40)
    r = next(r for r in pairwise_rows("x vs y", rows, ASPECTS, n_boot=100) if r["aspect"] == "articulate")
    assert r["win_pct"] == 60.0
    assert r["lc_win_pct"] < r["pref_pct"] - 5


def test_win_ci_narrows_with_more_pairs():
    small = pairwise_rows("x", judged("f", ["a", "b", "tie", "a"] * 3), ASPECTS, n_boot=1000)[0]
    large = pairwise_rows("x", judged("f", ["a", "b", "tie", "a"] * 48), ASPECTS, n_boot=1000)[0]
    assert small["win_pct"] == large["win_pct"] == 50.0
    for r in (small, large):
        assert r["win_ci_low_pct"] <= 50.0 <= r["win_ci_high_pct"]
    assert (large["win_ci_high_pct"] - large["win_ci_low_pct"]) < (small["win_ci_high_pct"] - small["win_ci_low_pct"]) / 2


def test_gold_report_pools_every_source_into_one_correct_share():
    rows = [
        {"source": "boolq", "input": "", "answers": ["yes"], "response": "Yes."},
        {"source": "boolq", "input": "", "answers": ["no"], "response": "Yes, it is."},
        {"source": "nq_open", "input": "", "answers": ["Paris"], "response": "It is Paris."},
        {"source": "nq_open", "input": "", "answers": ["Mars"], "response": "Mars"},
        {"source": "alpaca", "input": "", "answers": [], "response": "anything"},  # no gold: not pooled
    ]
    gold = gold_report({"s": rows}, n_boot=200)["s"]
    assert gold["_all"]["n"] == 4 and gold["_all"]["correct"] == 0.75
    lo, hi = gold["_all"]["ci"]["correct"]
    assert 0.0 <= lo < 0.75 < hi <= 1.0
    assert gold["boolq"]["accuracy"] == 0.5 and gold["_unscored"] == {"alpaca": 1}
    assert "| s | all (pooled) | 4 | correct | 75.0 |" in gold_markdown({"s": gold})


def test_fig2_is_a_png_with_one_group_per_family(tmp_path):
    rows = judged("commonsense", ["a", "b"]) + judged("world_knowledge", ["a"]) + judged("demo", ["tie"])
    table = pairwise_rows("x vs y", rows, ASPECTS, n_boot=50) + pairwise_rows("x vs z", rows, ASPECTS, n_boot=50)
    fig = plot_fig2(table, tmp_path / "fig2.png", ASPECTS)
    data = (tmp_path / "fig2.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 100_000
    axes = fig.get_axes()
    assert len(axes) == 2 * 3  # comparisons x aspects
    for ax in axes:
        labels = [t.get_text().replace("\n", "_") for t in ax.get_xticklabels()]
        assert labels == ["commonsense", "demo", "world_knowledge"]  # one group per family, no "all"
        assert len(ax.patches) == 3 * 3  # win/tie/lose bars per family


def _answer_files(tmp_path):
    base = [
        {"id": "q1", "source": "nq_open", "instruction": "Capital of France?", "input": "", "answers": ["Paris"]},
        {"id": "q2", "source": "boolq", "instruction": "Is ice cold?", "input": "Passage: ice", "answers": ["yes"]},
        {"id": "q3", "source": "commonsense_qa", "instruction": "Pick", "input": "A. dog\nB. cat", "answers": ["B. cat", "cat"]},
        {"id": "q4", "source": "alpaca", "instruction": "Write a line", "input": "", "answers": []},
        {"id": "q5", "source": "squad_v2", "instruction": "Q?", "input": "Passage: p", "answers": [NO_ANSWER]},
    ]
    citing = [dict(r, response=f, responses=[s0, f]) for r, f, s0 in zip(
        base, ["Paris GOOD", "Yes GOOD", "B GOOD", "GOOD line", NO_ANSWER], ["Lyon", "No", "A dog", "line", "maybe p"])]
    sft = [dict(r, response=f) for r, f in zip(base, ["London", "no", "A", "line", ""])]
    sft[1]["input"] = "Passage: ice is cold"  # same id, other input: reported
    sft = sft[:3] + [sft[0], sft[4], dict(base[0], id="q9", response="x")]  # dup q1, lacks q4, extra q9
    paths = {}
    for name, rows in (("citing", citing), ("sft", sft)):
        paths[name] = tmp_path / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


@pytest.mark.slow
def test_evaluate_recipe_gold_only(tmp_path):
    paths = _answer_files(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "recipes/evaluate.py", "--answers", f"citing={paths['citing']}",
                           f"sft={paths['sft']}", "--reference", "citing", "--output_dir", str(out),
                           "--judge_backend", "none"], cwd=REPO, capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    gold = json.loads((out / "gold.json").read_text())
    assert gold["citing"]["nq_open"]["answer_in_response"] == 1.0 and gold["sft"]["nq_open"]["n"] == 2 - 1 + 1
    assert gold["citing@1"]["commonsense_qa"]["accuracy"] == 1.0 and gold["citing@0"]["commonsense_qa"]["accuracy"] == 0
    assert gold["citing"]["_unscored"] == {"alpaca": 1}
    issues = json.loads((out / "issues.json").read_text())
    assert issues["duplicate_ids"]["sft"] == {"count": 1, "examples": ["q1"]}
    assert issues["empty_responses"]["sft"]["examples"] == ["q5"]
    assert issues["missing_ids"]["sft (vs citing)"]["examples"] == ["q4"]
    assert issues["missing_ids"]["citing (vs sft)"]["examples"] == ["q9"]
    assert issues["different_instruction"]["sft (vs citing)"] == {"count": 1, "examples": ["q2"]}
    t2 = json.loads((out / "table2.json").read_text())
    assert t2["fix_break"]["citing@1 vs citing@0"]["all"] == {"wrong_to_right": 4, "right_to_wrong": 0,
                                                              "right_to_right": 0, "wrong_to_wrong": 0, "no_gold": 1}
    assert not (out / "table1.json").exists() and not (out / "fig2.png").exists()
    assert "duplicate ids: sft: 1" in proc.stdout.replace("\n", " ")
    bad = subprocess.run([sys.executable, "recipes/evaluate.py", "--answers", f"citing={paths['citing']}",
                          "--reference", "nobody", "--judge_backend", "none", "--output_dir", str(out)],
                         cwd=REPO, capture_output=True, text=True, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("evaluate.py: error: --reference")


def test_evaluation_with_judge_tables_figure_and_free_rerun(tmp_path):
    paths = _answer_files(tmp_path)
    with FaultServer(reply=prefers_good) as server:
        args = parsed(answers=[f"citing={paths['citing']}", f"sft={paths['sft']}"], reference="citing",
                      output_dir=str(tmp_path / "out"), judge_backend="openai", judge_model="judge",
                      judge_base_url=server.base_url, judge_api_key_env="CITING_TEST_NO_SUCH_KEY",
                      bootstrap_samples=200)
        summary = run_evaluation(*args)
        # table 1: 4 common ids (q1, q2, q3, q5) x 2 orders; table 2: citing@1 vs citing@0, 5 ids x 2 orders
        assert server.total_hits == 8 + 10
        t1 = json.loads((tmp_path / "out" / "table1.json").read_text())["rows"]
        allrow = next(r for r in t1 if r["family"] == "all" and r["aspect"] == "articulate")
        # citing's answers contain GOOD except q5 (no-answer phrase); sft's never: 3 wins, 1 tie of 4
        assert (allrow["n"], allrow["win_pct"], allrow["tie_pct"], allrow["lose_pct"]) == (4, 75.0, 25.0, 0.0)
        assert {r["family"] for r in t1} == {"world_knowledge", "reading_comprehension", "commonsense", "all"}
        t2 = json.loads((tmp_path / "out" / "table2.json").read_text())["rows"]
        assert next(r for r in t2 if r["family"] == "all" and r["aspect"] == "in-depth")["win_pct"] == 80.0
        usage = json.loads((tmp_path / "out" / "judge_usage.json").read_text())
        assert usage["consistency_rate"] == 1.0 and usage["unparsed"] == 0 and usage["requests_sent"] == 18
        assert (tmp_path / "out" / "fig2.png").read_bytes()[:4] == b"\x89PNG"
        assert len((tmp_path / "out" / "verdicts.jsonl").read_text().splitlines()) == 4 + 5
        assert summary["table1"] == t1
        again = run_evaluation(*args)
        assert server.total_hits == 18  # rerun: every verdict read back from the judge cache
        assert again["judge_usage"]["requests_sent"] == 0


def test_evaluation_judge_through_the_batch_api_matches_live_and_reruns_free(tmp_path):
    paths = _answer_files(tmp_path)
    common = dict(answers=[f"citing={paths['citing']}", f"sft={paths['sft']}"], reference="citing",
                  judge_backend="openai", judge_model="judge", judge_api_key_env="CITING_TEST_NO_SUCH_KEY",
                  bootstrap_samples=200)
    with FaultServer(reply=prefers_good) as live_server:
        live = run_evaluation(*parsed(**common, output_dir=str(tmp_path / "live"),
                                      judge_base_url=live_server.base_url))
    with BatchServer(reply=prefers_good, polls_to_finish=2) as server:
        args = parsed(**common, output_dir=str(tmp_path / "batch"), judge_base_url=server.base_url,
                      judge_batch=True, judge_batch_poll_interval=0.01)
        summary = run_evaluation(*args)
        # every one of the 18 judge requests (table 1: 4 pairs, table 2: 5 pairs, both orders) in one batch
        assert len(server.batches) == 1 and server.live_calls == []
        (batch_id,) = server.batches
        assert len(server.lines_of(batch_id)) == 18
        assert summary["table1"] == live["table1"] and summary["table2"] == live["table2"]
        usage = json.loads((tmp_path / "batch" / "judge_usage.json").read_text())
        assert usage["judge"]["batch"] is True and usage["batches_submitted"] == 1 and usage["unparsed"] == 0
        again = run_evaluation(*args)
        assert len(server.batches) == 1 and server.uploads == 1  # rerun: read back from the judge cache
        assert again["judge_usage"]["requests_sent"] == 0
    with pytest.raises(ValueError, match="--judge_batch needs --judge_backend openai"):
        parsed(**{**common, "judge_backend": "local"}, judge_batch=True)


def test_evaluation_with_local_judge_on_tiny_model(tmp_path, tiny_model_dir):
    paths = _answer_files(tmp_path)
    args = parsed(answers=[f"citing={paths['citing']}", f"sft={paths['sft']}"], reference="citing",
                  output_dir=str(tmp_path / "out"), judge_backend="local", judge_model=str(tiny_model_dir),
                  judge_max_parse_retries=1, judge_max_tokens=8, bootstrap_samples=50)
    summary = run_evaluation(*args)
    t1 = json.loads((tmp_path / "out" / "table1.json").read_text())["rows"]
    for r in t1:  # a random model rarely gives a verdict: every pair is a verdict or a counted unparsed
        groups = {"all": 4, "world_knowledge": 1, "reading_comprehension": 2, "commonsense": 1}
        assert r["n"] + r["unparsed"] == groups[r["family"]]
    usage = summary["judge_usage"]
    assert usage["judge_stats"]["judgements"] == (4 + 5) * 3
    assert usage["requests_sent"] >= (4 + 5) * 2


def test_family_mapping():
    assert family_of("squad_v2") == "reading_comprehension" and family_of("piqa") == "commonsense"
    assert family_of("alpaca") == "alpaca" and family_of("demo") == "demo" and family_of("user") == "user"


@pytest.mark.parametrize("with_judge", [False, True])
def test_answers_files_without_a_shared_id_are_one_clear_error(tmp_path, with_judge):
    rows = [{"id": f"q{i}", "source": "alpaca", "instruction": "Say hi", "input": "", "response": "hi"} for i in (1, 2)]
    files = {"citing": tmp_path / "citing.jsonl", "sft": tmp_path / "sft.jsonl"}
    files["citing"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    files["sft"].write_text("".join(json.dumps(dict(r, id=r["id"] + "-other")) + "\n" for r in rows))
    out = tmp_path / "out"
    flags = dict(answers=[f"citing={files['citing']}", f"sft={files['sft']}"], reference="citing", output_dir=str(out))
    if with_judge:  # a judge client that must never be asked
        flags.update(judge_backend="openai", judge_model="judge", judge_base_url="http://127.0.0.1:9/v1",
                     judge_api_key_env="CITING_TEST_NO_SUCH_KEY")
    else:
        flags.update(judge_backend="none")
    with pytest.raises(AnswersError) as err:
        run_evaluation(*parsed(**flags))
    assert isinstance(err.value, UserError)
    message = str(err.value)
    assert f"citing ({files['citing']})" in message and f"sft ({files['sft']})" in message
    assert "share no row id" in message
    assert sorted(p.name for p in out.iterdir()) == []  # no table, figure or gold report was written


def _strict_loads(text):
    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")
    return json.loads(text, parse_constant=refuse)


def test_tables_with_no_readable_verdict_are_strict_json(tmp_path):
    # every verdict of "articulate" unreadable: its win %, CI and LC are NaN, which json.dumps writes as NaN
    rows = [{"family": "f", "verdicts": {"articulate": "unparsed", "in-depth": "a", "comprehensive": "b"},
             "len_ref": 3, "len_other": 4}] * 3
    table = pairwise_rows("x vs y", rows, ASPECTS, n_boot=20)
    art = next(r for r in table if r["aspect"] == "articulate")
    assert art["n"] == 0 and art["win_pct"] != art["win_pct"]  # NaN in memory
    write_table(tmp_path, "table1", "t", table, {"judge": {"x vs y": {"rate": float("inf")}}})
    data = _strict_loads((tmp_path / "table1.json").read_text())
    row = next(r for r in data["rows"] if r["aspect"] == "articulate")
    assert row["win_pct"] is None and row["lc_win_pct"] is None and row["win_ci_low_pct"] is None
    assert data["judge"]["x vs y"]["rate"] is None
    assert strict_json({"a": [np.float32("nan"), np.float64(1.5), (2, float("-inf"))], "b": True}) == \
        '{"a": [null, 1.5, [2, null]], "b": true}'
