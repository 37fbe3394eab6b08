"""``sskd``: self-supervised KD (Xu et al., ECCV 2020), its self-supervision part.

Each image is seen at rotations 0/90/180/270. For every rotated copy (3B of
them) the cosine similarities of its code to the B unrotated codes form a
distribution (softmax with T = 0.5); the student matches the teacher's
distribution by KL, scaled by T^2. As in SSKD, rows where the teacher itself
fails to rank the right image first are partly dropped: all correct rows are
kept, plus the fraction ``ss_ratio`` (0.75, SSKD's default) of the wrong rows
with the smallest rank error.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from brcd.distill.base import KD_LOSSES, DistillLoss, KDBatch, safe_cosine_matrix
from brcd.hashing import codes_from_logits, hash_codes


def rotation_similarities(rot: Tensor) -> Tensor:
    """(B, 4, L) -> cosines (3B, B) of rotated rows (image-major) to unrotated rows."""
    normal = rot[:, 0]
    rotated = rot[:, 1:].reshape(-1, rot.shape[-1])
    return safe_cosine_matrix(rotated, normal)


def rows_to_keep(t_sim: Tensor, ss_ratio: float) -> Tensor:
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
    defaults = {"temperature": 0.5, "ss_ratio": 0.75, "features": "codes"}

    def forward(self, batch: KDBatch) -> dict[str, Tensor]:
        if batch.s_rot_logits is None or batch.t_rot_logits is None:
            raise ValueError("sskd needs KDBatch.s_rot_logits and t_rot_logits (B, 4, L): "
                             "the trainer must encode the 4 rotations when loss.needs_rotations")
        s_rot, t_rot = batch.s_rot_logits, batch.t_rot_logits.detach()
        if self.options["features"] == "codes":
            s_rot = hash_codes(s_rot)  # the same straight-through codes as the student's views
            t_rot = codes_from_logits(t_rot).to(s_rot.dtype)
        temperature = float(self.options["temperature"])
        with torch.no_grad():
            t_sim = rotation_similarities(t_rot)
            keep = rows_to_keep(t_sim, float(self.options["ss_ratio"]))
        s_sim = rotation_similarities(s_rot)
        if len(keep) == 0:
            return {"loss": s_sim.sum() * 0.0, "kept_rows": s_sim.new_zeros(())}
        loss = F.kl_div(F.log_softmax(s_sim[keep] / temperature, dim=1), F.softmax(t_sim[keep] / temperature, dim=1),
                        reduction="batchmean") * temperature**2
        return {"loss": loss, "kept_rows": s_sim.new_tensor(len(keep) / len(t_sim))}
