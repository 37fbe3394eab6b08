"""``kd``: Hinton et al. 2015 ("Distilling the knowledge in a neural
network"), on the L code outputs treated as class scores.

KL(softmax(x_T / T) || softmax(x_S / T)) * T^2, T = 4, averaged over the batch.

Settings and the reference code (``DistillKL`` applied to ``z_i, t_z_i``):

- ``views: first`` (default) distils view 1 only, as the reference does;
  ``both`` averages the two augmented views.
- ``features: logits`` (default) is a deliberate deviation: the reference
  feeds the ±1 *codes* (``features: codes`` reproduces it). SPEC §4 defines
  ``kd`` on the pre-sign logits u, and on codes every bit's score is ±1/T, so
  the teacher's "soft targets" carry no confidence at all -- only the sign
  pattern, which the relational and contrastive baselines already transfer.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from brcd.distill.base import KD_LOSSES, TEMPERATURE, DistillLoss, KDBatch, features_option, mean_over_views, views_option
from brcd.options import Number, Options


def hinton_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits.detach() / temperature, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * temperature**2


@KD_LOSSES.register("kd")
class HintonKD(DistillLoss):
    settings = Options(temperature=Number(4.0, TEMPERATURE, minimum=0, exclusive_minimum=True),
                       features=features_option("logits"), views=views_option())

    def forward(self, batch: KDBatch) -> dict[str, Tensor]:
        t = self.options["temperature"]
        loss = mean_over_views(batch, self.options["views"], self.options["features"],
                               lambda s, teacher: hinton_kd(s, teacher, t))
        return {"loss": loss}
