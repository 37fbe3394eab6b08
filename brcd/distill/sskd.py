"""``sskd``: self-supervised KD (Xu et al., ECCV 2020), its self-supervision part.

Each image is seen at rotations 0/90/180/270. For every rotated copy (3B of
them) the cosine similarities of its code to the B unrotated codes form a
distribution (softmax with T = 0.5); the student matches the teacher's
distribution by KL, scaled by T^2. SSKD drops some rows where the teacher
itself fails to rank the right image first: all correct rows are kept, plus
the fraction ``ss_ratio`` of the wrong rows with the smallest rank error.

Settings and the reference code (``DistillSSKD``, ``sskd_data``):

- ``ss_ratio: 1.0`` (default) keeps every row, as the reference ran
  (``wrong_keep = int(wrong_num * 1.0)``); 0.75 is SSKD's own CIFAR setting.
- ``features: codes``: the reference compares the ±1 codes; ``logits`` the
  pre-sign logits.
- A deviation kept: the reference rotates each training image and then
  augments every rotated copy independently; here the rotations are of the
  clean (unaugmented) image. The four rotations come precomputed from the
  feature source (``FeatureSource.rotations``, stored once per image in the
  feature bank), so augmenting them would need four more augmented views
  per image and epoch in the bank. The self-supervision task -- which
  unrotated image a rotated copy comes from -- is unchanged; only the extra
  augmentation of the copies is missing (a change to the feature source,
  not to this loss).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from brcd.distill.base import KD_LOSSES, TEMPERATURE, DistillLoss, KDBatch, features_option, safe_cosine_matrix
from brcd.options import Number, Options
from brcd.hashing import codes_from_logits, hash_codes


def rotation_similarities(rot: Tensor) -> Tensor:
    """(B, 4, L) -> cosines (3B, B) of rotated rows (image-major) to unrotated rows."""
    normal = rot[:, 0]
    rotated = rot[:, 1:].reshape(-1, rot.shape[-1])
    return safe_cosine_matrix(rotated, normal)


def rows_to_keep(t_sim: Tensor, ss_ratio: float) -> Tensor | None:
    """The rows SSKD keeps: every row the teacher ranks right, and the fraction ``ss_ratio`` of the wrong ones
    with the smallest rank error. None when that is every row (``ss_ratio`` 1, the default): the loss then
    skips the selection (a KL summed over the same rows, in another order)."""
    if ss_ratio >= 1.0:
        return None
    batch = t_sim.shape[1]
    target = torch.arange(batch, device=t_sim.device).repeat_interleave(3)
    target_sim = t_sim.gather(1, target[:, None])
    rank = (t_sim > target_sim).sum(1)  # how many unrotated images the teacher puts above the right one
    wrong = torch.nonzero(rank > 0).flatten()
    keep_wrong = wrong[torch.argsort(rank[wrong], stable=True)[: int(len(wrong) * ss_ratio)]]
    return torch.cat([torch.nonzero(rank == 0).flatten(), keep_wrong])


@KD_LOSSES.register("sskd")
class SSKD(DistillLoss):
    needs_rotations = True
    settings = Options(temperature=Number(0.5, TEMPERATURE, minimum=0, exclusive_minimum=True),
                       ss_ratio=Number(1.0, "the fraction of the wrongly ranked rows to keep", minimum=0, maximum=1),
                       features=features_option("codes"))

    def forward(self, batch: KDBatch) -> dict[str, Tensor]:
        if batch.s_rot_logits is None or batch.t_rot_logits is None:
            raise ValueError("sskd needs KDBatch.s_rot_logits and t_rot_logits (B, 4, L): "
                             "the trainer must encode the 4 rotations when loss.needs_rotations")
        s_rot, t_rot = batch.s_rot_logits, batch.t_rot_logits.detach()
        if self.options["features"] == "codes":
            s_rot = hash_codes(s_rot)  # the same straight-through codes as the student's views
            t_rot = codes_from_logits(t_rot).to(s_rot.dtype)
        temperature = self.options["temperature"]
        with torch.no_grad():
            t_sim = rotation_similarities(t_rot)
            keep = rows_to_keep(t_sim, self.options["ss_ratio"])
        s_sim = rotation_similarities(s_rot)
        rows = len(t_sim)
        if keep is not None:
            s_sim, t_sim = s_sim[keep], t_sim[keep]
        if len(t_sim) == 0:
            return {"loss": s_sim.sum() * 0.0, "kept_rows": s_sim.new_zeros(())}
        loss = F.kl_div(F.log_softmax(s_sim / temperature, dim=1), F.softmax(t_sim / temperature, dim=1),
                        reduction="batchmean") * temperature**2
        return {"loss": loss, "kept_rows": s_sim.new_tensor(len(t_sim) / rows)}
