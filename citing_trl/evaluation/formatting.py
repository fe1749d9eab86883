"""How every report writes a number: one place, so gold.md, Table 1/2 and the comparison table agree.

A missing value (None) or an undefined one (NaN: no rows, or a statistic that cannot be computed) prints as "-".
"""

from __future__ import annotations


def missing(value) -> bool:
    """True for None and NaN (NaN is the one float not equal to itself)."""
    return value is None or value != value


def pct(fraction, *, signed: bool = False, unit: str = "") -> str:
    """A fraction as percent with one decimal: ``pct(0.378) == "37.8"``, ``pct(0.008, signed=True, unit=" pts")
    == "+0.8 pts"``."""
    if missing(fraction):
        return "-"
    return f"{100 * fraction:{'+' if signed else ''}.1f}{unit}"


def num(value) -> str:
    """A number already in its unit (a percentage, a length) with one decimal."""
    return "-" if missing(value) else f"{value:.1f}"


def p_value(p) -> str:
    """A p-value: three decimals, or scientific notation below 0.001 (so a tiny p never prints as 0.000)."""
    if missing(p):
        return "-"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def cell(value) -> str:
    """A table cell: a float as :func:`num`, anything else as its text."""
    return num(value) if isinstance(value, float) else str(value)


def signed(fraction) -> str:
    """A difference of fractions in percentage points, with its sign: ``signed(0.008) == "+0.8"``."""
    return pct(fraction, signed=True)


def pts(fraction) -> str:
    """:func:`signed` with its unit, for prose: ``"+0.8 pts"``."""
    return pct(fraction, signed=True, unit=" pts")


def percent(fraction) -> str:
    """:func:`pct` with a percent sign, for prose: ``"37.8%"`` ("-" when missing)."""
    return pct(fraction, unit="%")
