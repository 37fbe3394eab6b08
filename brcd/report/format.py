"""How the report writes numbers, intervals and tables: the text every part of it shares.

Also the format of the comparisons of two runs (:mod:`brcd.report.conclusions`), which
print their intervals the way the report does. Imports nothing from the rest of ``brcd``.
"""
from __future__ import annotations

from typing import Sequence

#: decimals of mAP, precision, ISD and NRA in the tables
DIGITS = 3
#: a value that is not there (not measured, or not defined for this cell)
MISSING = "—"
#: marks a table cell with a seed that hit its epoch cap while still improving
UNCONVERGED = "†"
#: marks a λ chosen at an edge of its method's grid (the best λ may lie beyond the grid)
LAMBDA_EDGE = "‡"


def format_number(value: float | None) -> str:
    """Latencies and rates: three significant digits without exponents."""
    if value is None:
        return MISSING
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:#.3g}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """GitHub pipe table; columns from ``numeric_from`` on are right-aligned."""
    from tabulate import tabulate

    align = ["left"] * numeric_from + ["right"] * (len(headers) - numeric_from)
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=align)


def signed(value: float, digits: int = DIGITS) -> str:
    """+0.012, -0.004, and 0.000 for anything that rounds to zero (never "-0.000")."""
    rounded = round(value, digits)
    return f"{0.0:.{digits}f}" if rounded == 0 else f"{rounded:+.{digits}f}"


def interval_digits(c, digits: int = DIGITS, most: int = 6) -> int:
    """Decimals that show a significant interval's sign: more than ``digits`` when its bound
    nearest 0 would round to 0 (a bold Δ with a bound printed as 0.000 reads as a contradiction)."""
    if not c.significant:
        return digits
    nearest = c.low if c.low > 0 else -c.high
    while digits < most and round(nearest, digits) == 0:
        digits += 1
    return digits


def interval_text(c) -> str:
    """``+0.012 [+0.004, +0.020]``: Δ and its 95% interval."""
    digits = interval_digits(c)
    return f"{signed(c.delta, digits)} [{signed(c.low, digits)}, {signed(c.high, digits)}]"


def tested_text(s) -> str:
    """``+0.012 [+0.004, +0.020], adj. p 0.031``: Δ, its 95% interval and the Holm-adjusted p-value
    (of a findings statement or a tested comparison)."""
    adjusted = f", adj. p {p_text(s.p_adjusted)}" if s.p_adjusted is not None else ""
    return interval_text(s) + adjusted


def p_text(p: float) -> str:
    """A p-value to two significant digits, small ones as "< 0.001"."""
    return "< 0.001" if p < 0.001 else f"{p:.2g}" if p < 0.01 else f"{p:.2f}"


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"
