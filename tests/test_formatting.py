"""citing_trl.evaluation.formatting: the one way every report writes a number."""

import math

from citing_trl.evaluation.formatting import cell, num, p_value, pct, percent, pts, signed


def test_fractions_print_as_percent_with_one_decimal():
    assert pct(0.378) == "37.8"
    assert percent(0.378) == "37.8%"
    assert signed(0.008) == "+0.8" and signed(-0.023) == "-2.3"
    assert pts(0.01) == "+1.0 pts"


def test_missing_and_undefined_values_print_as_a_dash():
    for f in (pct, percent, signed, pts, num, p_value):
        assert f(None) == "-" and f(math.nan) == "-"


def test_small_p_values_never_print_as_zero():
    assert p_value(0.755) == "0.755"
    assert p_value(0.0004) == "4.0e-04"
    assert p_value(0.0) == "0.0e+00"


def test_cells_format_floats_and_keep_other_values():
    assert cell(12.345) == "12.3" and cell(7) == "7" and cell("ok") == "ok" and cell(math.nan) == "-"
