"""Error control over a family of tests: Holm's step-down adjustment, and the rejection rule.

A report makes many verdicts per column (each method against the student without KD, each
ablation against full BRCD, ...). Each verdict at 95% alone would let the chance of at least
one false "significant" grow with the size of its family; Holm (1979) controls that chance
(the family-wise error rate) at alpha for any dependence between the tests -- the comparisons
of one column share their reference method and seeds, so they are dependent -- and rejects
everything Bonferroni does, and often more.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["holm", "rejects"]


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values, in the order given.

    With the m p-values sorted, p_(1) <= ... <= p_(m), the adjusted value of
    the i-th is max over j <= i of min(1, (m - j + 1) p_(j)): the smallest
    family-wise level at which Holm's step-down procedure rejects it. The
    running maximum keeps the adjusted values in the order of the raw ones
    (a smaller raw p never gets a larger adjusted p); equal raw p-values get
    equal adjusted ones. A family of one is left as it is.
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"holm takes a flat family of p-values, got shape {p.shape}")
    if np.any(np.isnan(p) | (p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    steps = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(steps)
    return adjusted


def rejects(p_value: float, confidence: float = 0.95) -> bool:
    """Whether a (raw or adjusted) p-value rejects at level 1 - ``confidence``: strictly below it, as a
    (1 - alpha) interval is significant when it excludes 0 strictly (:func:`brcd.stats.excludes_zero`)."""
    return p_value < 1.0 - confidence
