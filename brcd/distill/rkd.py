"""``rkd``: relational KD (Park et al., CVPR 2019) on codes (or logits).

Distance term: smooth-L1 between the mean-normalised pairwise distances of
student and teacher (weight 25); angle term: smooth-L1 between the cosines of
the angles formed by every triplet (weight 50).

Defaults are what the reference code ran (``RKDLoss()(z_i, t_z_i)``):
``features: codes`` (the ±1 codes; ``logits`` compares the pre-sign logits)
and ``views: first`` (view 1 only; ``both`` averages the two views).

Two points where binary codes matter (docs/method.md, "rkd and coinciding codes"):

- distance normaliser: the mean over all pairs i ≠ j, duplicate codes included
  (their distance is sqrt(1e-12), as RKD's ``pdist`` clamps it); only the
  diagonal is left out, as RKD and the BRCD reference compute it.
- angle term: e_j − e_i is the zero vector when two codes coincide. The
  reference normalises it with ``F.normalize`` (a zero vector, so its value is
  a cosine of 0) whose gradient there is 1/eps ≈ 1e12 times the upstream one.
  Here the value is the same (the zero vector stays zero) but such vectors pass
  no gradient: the triplet is left out of the gradient, which stays bounded.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from brcd.distill.base import (VIEWS, KD_LOSSES, DistillLoss, KDBatch, features_option, view_features,
                               views_option)
from brcd.options import Number, Options

#: RKD's ``pdist`` clamps squared distances here before the square root
SQUARED_EPS = 1e-12


def normalised_distances(x: Tensor) -> Tensor:
    """Pairwise Euclidean distances divided by their mean over all pairs i ≠ j (duplicates included)."""
    squared = ((x.unsqueeze(0) - x.unsqueeze(1)) ** 2).sum(-1)
    off_diagonal = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    dist = torch.where(off_diagonal, squared.clamp_min(SQUARED_EPS).sqrt(), torch.zeros_like(squared))
    pairs = int(off_diagonal.sum())
    scale = dist.sum() / pairs if pairs else dist.new_ones(())
    # a batch of one image has no pair; a mean of 0 cannot happen (clamped distances are > 0)
    return dist / scale


def unit_or_zero(x: Tensor) -> Tensor:
    """``x / |x|`` along the last dim; a zero vector stays zero and passes no gradient (no 1/eps)."""
    squared = (x * x).sum(-1, keepdim=True)
    nonzero = squared > 0
    norm = torch.where(nonzero, squared, torch.ones_like(squared)).sqrt()
    return torch.where(nonzero, x / norm, torch.zeros_like(x))


def triplet_angles(x: Tensor) -> Tensor:
    diff = unit_or_zero(x.unsqueeze(0) - x.unsqueeze(1))  # (B, B, D): e_j - e_i, unit length or zero
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
