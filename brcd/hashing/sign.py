"""From pre-sign logits u to binary codes (SPEC §2).

p = sigmoid(u), b = sign(p - 0.5) with an exact zero mapped to +1. The sign
has zero gradient almost everywhere, so training uses the straight-through
estimator: forward gives the sign, backward treats b as p - 0.5 (identity
gradient with respect to p).
"""
from __future__ import annotations

import torch


def _sign_plus(x: torch.Tensor) -> torch.Tensor:
    """sign(x) with sign(0) = +1."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def straight_through_sign(x: torch.Tensor) -> torch.Tensor:
    """sign(x) (sign(0) = +1) forward, identity gradient with respect to x backward."""
    return x + (_sign_plus(x) - x).detach()


def hash_codes(u: torch.Tensor) -> torch.Tensor:
    """Codes in {-1, +1} with a straight-through gradient (same shape as ``u``)."""
    return straight_through_sign(torch.sigmoid(u) - 0.5)


@torch.no_grad()
def codes_from_logits(u: torch.Tensor) -> torch.Tensor:
    """Codes in {-1, +1} as int8, without autograd (encoding for code files)."""
    return _sign_plus(torch.sigmoid(u) - 0.5).to(torch.int8)
