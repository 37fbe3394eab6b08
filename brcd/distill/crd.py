"""``crd``: contrastive representation distillation (Tian et al., ICLR 2020).

Linear embeddings (dim 128) of the student's and the teacher's view-1 codes
(or logits), L2-normalised; one memory bank per side over the training set
(momentum 0.5). The student embedding is contrasted against the teacher's
bank entry of the same image (positive) and 500 random other images
(negatives, drawn without replacement), and symmetrically for the teacher
embedding; NCE loss with temperature 0.05 and CRD's fixed normaliser Z. The
embeddings train with the student (as CRD's authors do); ``embeddings: frozen``
keeps them at their random initialisation, as the BRCD reference (which
optimises only the hashing head) does.

These are the reference code's settings (``CRDLoss`` on ``z_i, t_z_i``: codes,
view 1), except where its negatives come from: its data loader draws them
from the other *classes* with the ground-truth labels; here they are drawn
uniformly from all other training images (see ``sample_negatives``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from brcd.distill.base import (KD_LOSSES, MAX_SIZE, MOMENTUM, DistillLoss, KDBatch, MemoryBank, apply_embeddings_option,
                               bank_similarities, check_positions, contrastive_nce, embeddings_option,
                               features_option, l2_normalize, sample_negatives, view_features)
from brcd.options import Int, Number, Options


class ContrastiveMemoryLoss(DistillLoss):
    """Shared parts of crd and crcd: embeddings, two banks, sampling."""

    settings = Options(feat_dim=Int(128, "embedding dimension", minimum=1, maximum=MAX_SIZE),
                       negatives=Int(500, "negatives per anchor", minimum=1, maximum=MAX_SIZE),
                       nce_t=Number(0.05, "NCE temperature", minimum=0, exclusive_minimum=True),
                       momentum=MOMENTUM, features=features_option("codes"),
                       embeddings=embeddings_option())

    def __init__(self, name, bits, num_train, options, clusters=None):
        super().__init__(name, bits, num_train, options)
        dim = self.options["feat_dim"]
        self.embed_s = nn.Linear(bits, dim)
        self.embed_t = nn.Linear(bits, dim)
        self.memory_s = MemoryBank(num_train, dim, self.options["momentum"])
        self.memory_t = MemoryBank(num_train, dim, self.options["momentum"])
        self.register_buffer("z_s", torch.tensor(-1.0))
        self.register_buffer("z_t", torch.tensor(-1.0))
        apply_embeddings_option(self)
        self._pending: tuple[Tensor, Tensor, Tensor] | None = None
        self.register_state_dict_pre_hook(_apply_pending_update)

    def embed(self, batch: KDBatch) -> tuple[Tensor, Tensor, Tensor]:
        self.apply_pending_update()
        check_positions(batch.index, self.num_train, self.name)
        student, teacher = view_features(batch, 0, self.options["features"])
        v_s = l2_normalize(self.embed_s(student))
        v_t = l2_normalize(self.embed_t(teacher))
        positions = batch.index.long()
        contrast = torch.cat([positions[:, None],
                              sample_negatives(positions, self.options["negatives"], self.num_train)], dim=1)
        return v_s, v_t, contrast

    def update_memory(self, positions: Tensor, v_s: Tensor, v_t: Tensor) -> None:
        """Queue this step's bank update (training only): it is applied when the banks are next read, at
        the start of the next forward pass (or by ``state_dict``), so every forward pass reads the banks it
        read when the update was immediate. Until then the backward pass reads the banks as the forward pass
        did, with no copy of them (a fresh 2.5 MB per bank and step at 5,000 rows): the bank products keep
        the banks themselves, and autograd raises if anything changed them in place in between."""
        if self.training:
            self._pending = (positions, v_s.detach(), v_t.detach())

    def apply_pending_update(self) -> None:
        if self._pending is not None:
            positions, v_s, v_t = self._pending
            self._pending = None
            self.memory_s.update(positions, v_s)
            self.memory_t.update(positions, v_t)


def _apply_pending_update(module: ContrastiveMemoryLoss, prefix: str, keep_vars: bool) -> None:
    """``state_dict`` pre-hook: a saved bank holds every update (a module function, so the loss pickles)."""
    module.apply_pending_update()


@KD_LOSSES.register("crd")
class CRD(ContrastiveMemoryLoss):
    def forward(self, batch: KDBatch) -> dict[str, Tensor]:
        v_s, v_t, contrast = self.embed(batch)
        t = self.options["nce_t"]
        # student anchor vs the teacher's bank (positive first), and vice versa
        sim_s = bank_similarities(self.memory_t.memory, contrast, v_s)
        sim_t = bank_similarities(self.memory_s.memory, contrast, v_t)
        loss_s = contrastive_nce(sim_s, t, self.z_s, self.num_train)
        loss_t = contrastive_nce(sim_t, t, self.z_t, self.num_train)
        self.update_memory(batch.index.long(), v_s, v_t)
        return {"loss": loss_s + loss_t, "student_nce": loss_s.detach(), "teacher_nce": loss_t.detach()}
