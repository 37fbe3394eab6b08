"""``sp``: similarity-preserving KD (Tung & Mori, ICCV 2019).

G = X X^T over the batch, each row L2-normalised; loss = ||G_T - G_S||_F^2 / B^2,
on codes (or logits), averaged over both views.
"""
from __future__ import annotations

import torch
from torch import Tensor

from brcd.distill.base import KD_LOSSES, DistillLoss, KDBatch, l2_normalize, view_features


def normalised_gram(x: Tensor) -> Tensor:
    return l2_normalize(x @ x.t())


def sp_loss(student: Tensor, teacher: Tensor) -> Tensor:
    with torch.no_grad():
        g_teacher = normalised_gram(teacher)
    diff = g_teacher - normalised_gram(student)
    return (diff * diff).sum() / (len(student) ** 2)


@KD_LOSSES.register("sp")
class SimilarityPreserving(DistillLoss):
    defaults = {"features": "codes"}

    def forward(self, batch: KDBatch) -> dict[str, Tensor]:
        loss = sum(sp_loss(*view_features(batch, v, self.options["features"])) for v in (0, 1)) / 2
        return {"loss": loss}
