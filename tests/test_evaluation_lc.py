"""The length-controlled win rate under separation: a judge that always prefers the longer answer says
nothing about the preference at equal length, so the tables must not print a confident number."""

import json

import pytest

from citing_trl.evaluation.reports import pairwise_rows, table_markdown, write_table
from citing_trl.evaluation.stats import is_length_separated, length_controlled, length_controlled_win_rate

ASPECTS = ["articulate"]


def longer_wins(n=100, share_ref_longer=0.8):
    """A judge that always prefers the longer answer; the reference is longer on ``share_ref_longer`` of rows,
    by 1..20 words (lengths vary so the fit is not degenerate)."""
    rows = []
    for i in range(n):
        gap = 1 + i % 20
        ref_longer = i < n * share_ref_longer
        rows.append({"family": "alpaca", "verdicts": {"articulate": "a" if ref_longer else "b"},
                     "len_ref": 30 + gap if ref_longer else 30, "len_other": 30 if ref_longer else 30 + gap})
    return rows


def test_separated_verdicts_give_an_undetermined_lc_interval(tmp_path):
    (row,) = pairwise_rows("x vs y", longer_wins(), ASPECTS, n_boot=50)
    assert row["win_pct"] == 80.0
    # the regularised point (kept for reference) is the confident 66-70% the issue reported ...
    assert 60 < row["lc_win_pct"] < 75
    # ... but the row says the data do not determine it
    assert row["lc_separated"] is True and (row["lc_low_pct"], row["lc_high_pct"]) == (0.0, 100.0)
    text = table_markdown("t", [row])
    assert "undetermined (0.0-100.0)" in text and f"{row['lc_win_pct']:.1f}" not in text
    write_table(tmp_path, "table1", "t", [row])
    assert json.loads((tmp_path / "table1.json").read_text())["rows"][0]["lc_separated"] is True
    assert "lc_separated" in (tmp_path / "table1.csv").read_text().splitlines()[0]


def test_one_verdict_against_length_removes_the_flag_and_keeps_the_value():
    rows = longer_wins()
    rows[0]["verdicts"]["articulate"] = "b"  # the reference was longer here and still lost
    (row,) = pairwise_rows("x vs y", rows, ASPECTS, n_boot=50)
    prefs = [{"a": 1.0, "b": 0.0}[r["verdicts"]["articulate"]] for r in rows]
    diffs = [r["len_ref"] - r["len_other"] for r in rows]
    assert row["lc_separated"] is False and row["lc_low_pct"] is None and row["lc_high_pct"] is None
    assert row["lc_win_pct"] == pytest.approx(100 * length_controlled_win_rate(prefs, diffs))
    assert "undetermined" not in table_markdown("t", [row])


def test_separation_rule():
    assert is_length_separated([1, 0, 0.5], [5, -3, 7])  # ties do not count
    assert is_length_separated([1, 0], [-5, 3])  # the shorter answer always wins: separated too
    assert not is_length_separated([1, 0, 1], [5, -3, -1])  # one win of the shorter answer
    assert not is_length_separated([1, 0], [0, -3])  # a win at equal length
    assert not is_length_separated([1, 1, 0.5], [5, 3, -2])  # wins only
    lc = length_controlled([1, 1, 0.5, 0], [2, 2, 0, 0])
    assert not lc.separated and lc.low is None
