"""GreedyHash (Su et al., NeurIPS 2018) adapted to the two-view interface.

GreedyHash's own parts: the code is sign(u) with a plain straight-through
gradient (identity with respect to u), and the cubic penalty
mean |(|u| - 1)|^3 pulls the logits towards +-1 so the sign loses little.
The similarity term, unsupervised here, is the same NT-Xent on codes that
CIBHash uses, so the two objectives differ only in GreedyHash's parts.
"""
from __future__ import annotations

import torch
from torch import nn

from brcd.hashing.objectives import NTXENT_TAU, OBJECTIVES, nt_xent
from brcd.hashing.sign import straight_through_sign
from brcd.options import Number, Options


@OBJECTIVES.register("greedyhash")
class GreedyHash(nn.Module):
    settings = Options(tau=NTXENT_TAU, alpha=Number(0.1, "weight of the cubic penalty", minimum=0))

    def __init__(self, bits: int, tau: float, alpha: float):
        super().__init__()
        self.bits, self.tau, self.alpha = bits, tau, alpha

    def codes(self, u: torch.Tensor) -> torch.Tensor:
        return straight_through_sign(u)  # on u itself, not on sigmoid(u) - 0.5 as CIBHash

    def forward(self, u1: torch.Tensor, u2: torch.Tensor) -> dict[str, torch.Tensor]:
        ntxent = nt_xent(self.codes(u1), self.codes(u2), self.tau)
        penalty = (torch.cat([u1, u2]).abs() - 1).abs().pow(3).mean()
        return {"loss": ntxent + self.alpha * penalty, "ntxent": ntxent, "penalty": penalty}
