"""``crcd``: complementary relation contrastive distillation (Zhu et al., CVPR 2021).

Same embeddings, banks and settings as ``crd`` (dim 128, 500 negatives,
T = 0.05, momentum 0.5), but what is contrasted are *relations* to anchors:
the anchors are the bank entries of the batch's images. For sample b and
anchor a, the student relation v_s(b) - A_t(a) must match the teacher
relation w_t(b) - A_t(a) of the same image (positive) against the relations
w_t(j) - A_t(a) of 500 random other images; relations are compared by
cosine. Symmetrically for the teacher with the student's bank. NCE loss.

Defaults are what the reference code ran (its ``ContrastMemory`` of CRCD):

- ``anchors: all``: every image of the batch is an anchor, B x B x 501
  relations per side. ``anchors: <int>`` draws that many anchors per step
  instead, a speed option (at B = 64 on one CPU core: about 80 ms per step
  with 8 anchors, 250-350 ms with all); over an epoch every image still
  serves as one.
- ``self_pairs: true``: the a = b pairs are included. Their positive teacher
  relation is A_t(b) - A_t(b) = 0; the reference adds 1e-6 to every relation
  before normalising, so a zero relation has the direction of the all-ones
  vector, and so it has here (``RELATION_OFFSET``). ``self_pairs: false``
  drops these degenerate pairs.

As for ``crd``, negatives are drawn uniformly, not from other classes as the
reference's label-based loader does.
"""
from __future__ import annotations

import torch
from torch import Tensor

from brcd.distill.base import KD_LOSSES, KDBatch, is_int, nce_loss, normalised_exp, require
from brcd.distill.crd import ContrastiveMemoryLoss

#: added to every coordinate of every relation, as in the reference code
RELATION_OFFSET = 1e-6


def relation_cosines(bank: Tensor, sample: Tensor, anchors: Tensor, offset: float = RELATION_OFFSET) -> Tensor:
    """cos(bank[b, j] - anchors[a] + offset, sample[b] - anchors[a] + offset) for all b, a, j: (B, A, J).

    Expanded through dot products so that no (B, A, J, D) tensor is built. In
    float64: the expansion gets a squared norm by subtracting terms of size 1,
    and a zero relation's true squared norm is D * offset^2 (~1e-10), far
    below float32 rounding.
    """
    dtype = sample.dtype
    bank, sample, anchors = bank.double() + offset, sample.double() + offset, anchors.double()
    w_v = torch.einsum("bjd,bd->bj", bank, sample)  # (B, J)
    w_a = torch.einsum("bjd,ad->bja", bank, anchors)  # (B, J, A)
    v_a = sample @ anchors.t()  # (B, A)
    a_a = (anchors * anchors).sum(1)  # (A,)
    w_w = (bank * bank).sum(-1)  # (B, J)
    v_v = (sample * sample).sum(-1)  # (B,)
    numerator = w_v[:, None, :] - w_a.transpose(1, 2) - v_a[:, :, None] + a_a[None, :, None]  # (B, A, J)
    w_norm2 = (w_w[:, None, :] - 2 * w_a.transpose(1, 2) + a_a[None, :, None]).clamp_min(0)
    v_norm2 = (v_v[:, None] - 2 * v_a + a_a[None, :]).clamp_min(0)[:, :, None]
    cosine = numerator / (w_norm2 * v_norm2).clamp_min(1e-300).sqrt()
    return cosine.clamp(-1.0, 1.0).to(dtype)


@KD_LOSSES.register("crcd")
class CRCD(ContrastiveMemoryLoss):
    defaults = {**ContrastiveMemoryLoss.defaults, "anchors": "all", "self_pairs": True}

    @classmethod
    def check_options(cls, name, options) -> None:
        anchors = options["anchors"]
        require(anchors == "all" or (is_int(anchors) and anchors >= 1), name, "anchors",
                '"all" or a positive number of anchors per step', anchors)
        require(isinstance(options["self_pairs"], bool), name, "self_pairs", "true or false", options["self_pairs"])

    def choose_anchors(self, batch_size: int, device) -> Tensor:
        """Rows of the batch that serve as anchors this step."""
        if self.options["anchors"] == "all":
            return torch.arange(batch_size, device=device)
        return torch.randperm(batch_size, device=device)[: min(int(self.options["anchors"]), batch_size)]

    def forward(self, batch: KDBatch) -> dict[str, Tensor]:
        v_s, v_t, contrast = self.embed(batch)
        positions = batch.index.long()
        t = float(self.options["nce_t"])
        anchors = positions[self.choose_anchors(len(positions), v_s.device)]
        pairs = positions[:, None] != anchors[None, :]  # (B, A): False on the a = b pairs
        if self.options["self_pairs"]:
            pairs = torch.ones_like(pairs)
        rel_s = relation_cosines(self.memory_t(contrast), v_s, self.memory_t(anchors))[pairs]
        rel_t = relation_cosines(self.memory_s(contrast), v_t, self.memory_s(anchors))[pairs]
        loss_s = nce_loss(normalised_exp(rel_s, t, self.z_s, self.num_train), self.num_train)
        loss_t = nce_loss(normalised_exp(rel_t, t, self.z_t, self.num_train), self.num_train)
        self.update_memory(positions, v_s, v_t)
        return {"loss": loss_s + loss_t, "student_nce": loss_s.detach(), "teacher_nce": loss_t.detach()}
