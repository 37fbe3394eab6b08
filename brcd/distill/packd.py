"""``packd``: positive-unlabeled, augmentation-aware contrastive KD (PACKD).

Adapted to codes: linear embeddings (dim 64, L2-normalised) of the student's
and the teacher's codes (or logits) of both augmented views.

- Augmentation-aware positives: the student's view v is paired with both
  teacher views w of the same image; the pairs are weighted by an entropic
  optimal-transport plan (Sinkhorn, eps 0.1) between the two student and the
  two teacher views, as PACKD weights its augmented views.
- Negatives: 500 other training images from a momentum memory bank of
  teacher embeddings; temperature 0.07.
- Positive-unlabeled: a "negative" from the bank may well be a positive
  (same content). Its weight in the denominator is
  w = 1 - sigmoid((cos_T(anchor, j) - cos_T(view 1, view 2)) / 0.05), from
  the frozen teacher's codes: an image the teacher places closer to the
  anchor than the anchor's own second augmentation is a likely positive and
  is down-weighted towards 0.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from brcd.distill.base import (KD_LOSSES, DistillLoss, KDBatch, MemoryBank, check_positions, l2_normalize,
                               safe_cosine, sample_negatives, view_features)


def sinkhorn_plan(cost: Tensor, eps: float, iterations: int) -> Tensor:
    """Entropic OT plan between uniform marginals for a batch of (n x m) costs."""
    n, m = cost.shape[-2:]
    kernel = torch.exp(-cost / eps)
    u = torch.full(cost.shape[:-1], 1.0 / n, device=cost.device, dtype=cost.dtype)
    v = torch.full(cost.shape[:-2] + (m,), 1.0 / m, device=cost.device, dtype=cost.dtype)
    for _ in range(iterations):
        u = (1.0 / n) / (kernel @ v.unsqueeze(-1)).squeeze(-1).clamp_min(1e-30)
        v = (1.0 / m) / (kernel.transpose(-1, -2) @ u.unsqueeze(-1)).squeeze(-1).clamp_min(1e-30)
    return u.unsqueeze(-1) * kernel * v.unsqueeze(-2)


@KD_LOSSES.register("packd")
class PACKD(DistillLoss):
    defaults = {"feat_dim": 64, "negatives": 500, "temperature": 0.07, "momentum": 0.5,
                "sinkhorn_eps": 0.1, "sinkhorn_iters": 30, "pu_temperature": 0.05, "features": "codes"}

    def __init__(self, name, bits, num_train, options, clusters=None):
        super().__init__(name, bits, num_train, options)
        dim = int(self.options["feat_dim"])
        self.embed_s = nn.Linear(bits, dim)
        self.embed_t = nn.Linear(bits, dim)
        self.memory_t = MemoryBank(num_train, dim, self.options["momentum"])
        # the frozen teacher's view-1 codes as last seen; zero rows = not seen yet
        self.register_buffer("teacher_codes", torch.zeros(num_train, bits))

    def pu_weights(self, batch: KDBatch, negatives: Tensor) -> Tensor:
        t1, t2 = batch.t_codes[0].detach().float(), batch.t_codes[1].detach().float()
        to_bank = safe_cosine(t1.unsqueeze(1), self.teacher_codes[negatives])  # (B, K)
        own_augmentation = safe_cosine(t1, t2).unsqueeze(1)  # (B, 1)
        return 1.0 - torch.sigmoid((to_bank - own_augmentation) / float(self.options["pu_temperature"]))

    def forward(self, batch: KDBatch) -> dict[str, Tensor]:
        check_positions(batch.index, self.num_train, self.name)
        positions = batch.index.long()
        feats = [view_features(batch, v, self.options["features"]) for v in (0, 1)]
        e_s = torch.stack([l2_normalize(self.embed_s(s)) for s, _ in feats], dim=1)  # (B, 2, D)
        e_t = torch.stack([l2_normalize(self.embed_t(t)) for _, t in feats], dim=1)  # (B, 2, D)
        temperature = float(self.options["temperature"])

        pair_sim = e_s @ e_t.transpose(1, 2)  # (B, 2 student views, 2 teacher views)
        with torch.no_grad():
            plan = sinkhorn_plan(1.0 - pair_sim, float(self.options["sinkhorn_eps"]), int(self.options["sinkhorn_iters"]))
            plan = plan / plan.sum(-1, keepdim=True)  # per student view: weights over teacher views
        positive = (plan * pair_sim).sum(-1) / temperature  # (B, 2)

        negatives = sample_negatives(positions, int(self.options["negatives"]), self.num_train)
        negative = torch.einsum("bvd,bkd->bvk", e_s, self.memory_t(negatives)) / temperature  # (B, 2, K)
        with torch.no_grad():
            weights = self.pu_weights(batch, negatives)
        negative = negative + torch.log(weights.clamp_min(1e-12)).unsqueeze(1)
        logits = torch.cat([positive.unsqueeze(-1), negative], dim=-1)
        loss = (torch.logsumexp(logits, dim=-1) - positive).mean()

        if self.training:
            self.memory_t.update(positions, e_t.mean(1))
            self.teacher_codes.index_copy_(0, positions, batch.t_codes[0].detach().float())
        return {"loss": loss, "pu_weight": weights.mean()}
