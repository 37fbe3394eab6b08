"""Student's t distribution for integer degrees of freedom (numpy only: no scipy in this environment)."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["t_cdf", "t_quantile"]


def _t_central(theta: np.ndarray, df: int) -> np.ndarray:
    """P(|T| <= sqrt(df) tan(theta)) for T ~ t_df: the finite series of Abramowitz & Stegun 26.7.3-4.

    Exact for integer df (the only case needed: df = S - 1 or n - 1), and
    monotone in theta on [0, pi/2], which makes inversion by bisection safe.
    """
    s, c2 = np.sin(theta), np.cos(theta) ** 2
    term = np.ones_like(theta)
    acc = np.ones_like(theta)
    if df % 2:  # odd: (2/pi) [theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)]
        if df == 1:
            return 2.0 / math.pi * theta
        for j in range(1, (df - 1) // 2):
            term = term * c2 * (2 * j) / (2 * j + 1)
            acc = acc + term
        return 2.0 / math.pi * (theta + s * np.cos(theta) * acc)
    for j in range(1, df // 2):  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        term = term * c2 * (2 * j - 1) / (2 * j)
        acc = acc + term
    return s * acc


def _check_df(df) -> int:
    if int(df) != df or df < 1:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df!r}")
    return int(df)


def t_cdf(x, df: int) -> np.ndarray:
    """Cumulative distribution function of Student's t with integer ``df`` degrees of freedom."""
    df = _check_df(df)
    x = np.asarray(x, dtype=float)
    central = _t_central(np.arctan(np.abs(x) / math.sqrt(df)), df)
    return 0.5 + np.sign(x) * 0.5 * central


def t_quantile(p, df: int) -> np.ndarray | float:
    """Quantile function of Student's t with integer ``df`` (vectorised over ``p`` in (0, 1)).

    Bisection on theta = arctan(t / sqrt(df)) in [0, pi/2) (60 halvings: far
    below float resolution of the quantiles used here), so even df = 1, whose
    tails reach any value, needs no bracket search.
    """
    df = _check_df(df)
    p_arr = np.asarray(p, dtype=float)
    if np.any((p_arr <= 0) | (p_arr >= 1)):
        raise ValueError("quantile levels must lie strictly between 0 and 1")
    target = np.abs(2.0 * p_arr - 1.0)
    lo, hi = np.zeros_like(target), np.full_like(target, math.pi / 2)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = _t_central(mid, df) < target
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    q = np.sign(p_arr - 0.5) * math.sqrt(df) * np.tan(0.5 * (lo + hi))
    return float(q) if np.ndim(p) == 0 else q

