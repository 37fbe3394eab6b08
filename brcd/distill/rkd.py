"""``rkd``: relational KD (Park et al., CVPR 2019) on codes (or logits).

Distance term: smooth-L1 between the mean-normalised pairwise distances of
student and teacher (weight 25); angle term: smooth-L1 between the cosines of
the angles formed by every triplet (weight 50).

Defaults are what the reference code ran (``RKDLoss()(z_i, t_z_i)``):
``features: codes`` (the ±1 codes; ``logits`` compares the pre-sign logits)
and ``views: first`` (view 1 only; ``both`` averages the two views).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from brcd.distill.base import (VIEWS, KD_LOSSES, DistillLoss, KDBatch, features_option, l2_normalize, view_features,
                               views_option)
from brcd.options import Number, Options


def normalised_distances(x: Tensor) -> Tensor:
    squared = ((x.unsqueeze(0) - x.unsqueeze(1)) ** 2).sum(-1)
    off_diagonal = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    dist = torch.where(off_diagonal, squared.clamp_min(1e-12).sqrt(), torch.zeros_like(squared))
    positive = dist > 1e-6
    # Mean over the non-zero distances; identical rows (all codes equal) give
    # no scale, so fall back to 1 rather than dividing by an empty mean.
    scale = dist[positive].mean() if positive.any() else dist.new_ones(())
    return dist / scale


def triplet_angles(x: Tensor) -> Tensor:
    diff = l2_normalize(x.unsqueeze(0) - x.unsqueeze(1))  # (B, B, D): e_j - e_i, unit length
    return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)


def rkd_loss(student: Tensor, teacher: Tensor, w_distance: float, w_angle: float) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        t_dist = normalised_distances(teacher)
        t_angle = triplet_angles(teacher)
    distance = F.smooth_l1_loss(normalised_distances(student), t_dist)
    angle = F.smooth_l1_loss(triplet_angles(student), t_angle)
    return w_distance * distance, w_angle * angle


@KD_LOSSES.register("rkd")
class RelationalKD(DistillLoss):
    settings = Options(distance_weight=Number(25.0, "weight of the distance term", minimum=0),
                       angle_weight=Number(50.0, "weight of the angle term", minimum=0),
                       features=features_option("codes"), views=views_option())

    def forward(self, batch: KDBatch) -> dict[str, Tensor]:
        views = VIEWS[self.options["views"]]
        terms = [rkd_loss(*view_features(batch, v, self.options["features"]),
                          self.options["distance_weight"], self.options["angle_weight"])
                 for v in views]
        distance = sum(t[0] for t in terms) / len(views)
        angle = sum(t[1] for t in terms) / len(views)
        return {"loss": distance + angle, "distance": distance.detach(), "angle": angle.detach()}
