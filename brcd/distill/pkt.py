"""``pkt``: probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018).

Cosine similarities within the batch, shifted to [0, 1] and normalised per
row into conditional probabilities; loss = KL(teacher || student), on codes
(or logits), averaged over both views.
"""
from __future__ import annotations

import torch
from torch import Tensor

from brcd.distill.base import KD_LOSSES, DistillLoss, KDBatch, safe_cosine_matrix, view_features

EPS = 1e-7


def similarity_distribution(x: Tensor) -> Tensor:
    similarity = (safe_cosine_matrix(x, x) + 1.0) / 2.0
    return similarity / similarity.sum(dim=1, keepdim=True)


def pkt_loss(student: Tensor, teacher: Tensor) -> Tensor:
    with torch.no_grad():
        target = similarity_distribution(teacher)
    model = similarity_distribution(student)
    # Mean over all B x B entries, as in the authors' code (not the per-row KL sum).
    return (target * torch.log((target + EPS) / (model + EPS))).mean()


@KD_LOSSES.register("pkt")
class ProbabilisticKT(DistillLoss):
    defaults = {"features": "codes"}

    def forward(self, batch: KDBatch) -> dict[str, Tensor]:
        loss = sum(pkt_loss(*view_features(batch, v, self.options["features"])) for v in (0, 1)) / 2
        return {"loss": loss}
