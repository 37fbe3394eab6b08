"""``kd``: Hinton et al. 2015, on the L code logits treated as class scores.

KL(softmax(u_T / T) || softmax(u_S / T)) * T^2, T = 4, averaged over the
batch and over the two augmented views.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from brcd.distill.base import KD_LOSSES, DistillLoss, KDBatch


def hinton_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits.detach() / temperature, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * temperature**2


@KD_LOSSES.register("kd")
class HintonKD(DistillLoss):
    defaults = {"temperature": 4.0}

    def forward(self, batch: KDBatch) -> dict[str, Tensor]:
        t = float(self.options["temperature"])
        loss = sum(hinton_kd(batch.s_logits[v], batch.t_logits[v], t) for v in (0, 1)) / 2
        return {"loss": loss}
