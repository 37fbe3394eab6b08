"""``pkt``: probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018).

Cosine similarities within the batch, shifted to [0, 1] and normalised per
row into conditional probabilities; loss = KL(teacher || student).

Defaults are what the reference code ran (``PKT()(z_i, t_z_i)``, the authors'
``cosine_similarity_loss``): ``features: codes`` (``logits`` compares the
pre-sign logits) and ``views: first`` (view 1 only; ``both`` averages the two).
"""
from __future__ import annotations

import torch
from torch import Tensor

from brcd.distill.base import (KD_LOSSES, DistillLoss, KDBatch, features_option, mean_over_views, safe_cosine_matrix,
                               views_option)
from brcd.options import Options

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
    settings = Options(features=features_option("codes"), views=views_option())

    def forward(self, batch: KDBatch) -> dict[str, Tensor]:
        return {"loss": mean_over_views(batch, self.options["views"], self.options["features"], pkt_loss)}
