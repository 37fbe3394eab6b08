"""``sp``: similarity-preserving KD (Tung & Mori, ICCV 2019).

G = X X^T over the batch, each row L2-normalised; loss = ||G_T - G_S||_F^2 / B^2.

Settings and the reference code (``sum(Similarity()(z_i, t_z_i))``):

- ``features: codes`` and ``views: first`` (view 1 only) are what it ran;
  ``logits`` / ``both`` are the alternatives.
- ``gram: batch`` (default) is the published method and a deliberate
  deviation: ``Similarity.forward`` expects a *list* of feature maps and
  zips over it, so the reference, handed a (B, L) tensor, iterates over the
  B images and compares each image's L x L outer product b b^T with the
  teacher's, summed over images. That is a per-image code-matching loss, not
  a similarity between images. ``gram: per_image`` reproduces it.
"""
from __future__ import annotations

import torch
from torch import Tensor

from brcd.distill.base import (KD_LOSSES, DistillLoss, KDBatch, features_option, l2_normalize, mean_over_views,
                               views_option)
from brcd.options import Choice, Options


def normalised_gram(x: Tensor) -> Tensor:
    return l2_normalize(x @ x.t())


def sp_loss(student: Tensor, teacher: Tensor) -> Tensor:
    with torch.no_grad():
        g_teacher = normalised_gram(teacher)
    diff = g_teacher - normalised_gram(student)
    return (diff * diff).sum() / (len(student) ** 2)


def per_image_sp_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """What the reference computes: sp_loss on each image's (L, 1) code column, summed over images."""
    def outer(x: Tensor) -> Tensor:
        return l2_normalize(x.unsqueeze(2) * x.unsqueeze(1))  # (B, L, L), rows normalised

    with torch.no_grad():
        g_teacher = outer(teacher)
    diff = g_teacher - outer(student)
    return (diff * diff).sum() / (student.shape[1] ** 2)


GRAMS = {"batch": sp_loss, "per_image": per_image_sp_loss}


@KD_LOSSES.register("sp")
class SimilarityPreserving(DistillLoss):
    settings = Options(features=features_option("codes"), views=views_option(),
                       gram=Choice("batch", "one Gram matrix of the batch, or one per image (the reference)",
                                   tuple(GRAMS)))

    def forward(self, batch: KDBatch) -> dict[str, Tensor]:
        loss_fn = GRAMS[self.options["gram"]]
        return {"loss": mean_over_views(batch, self.options["views"], self.options["features"], loss_fn)}
