"""Hashing objectives (SPEC §3) behind one interface, and the default, CIBHash.

An objective is an ``nn.Module`` built by :func:`create_objective`; its
``forward(u1, u2)`` takes the pre-sign logits of two augmented views of the
same B images (B x L each) and returns ``{"loss": total, <term>: value, ...}``.
``codes(u)`` gives the training-time codes the objective uses (with its
straight-through gradient), so distillation losses can act on the same codes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from brcd.codes import check_bits
from brcd.hashing.sign import hash_codes
from brcd.options import Number, Options
from brcd.registry import Registry

#: objective name -> nn.Module class constructed as cls(bits, **settings), declaring its ``settings``
OBJECTIVES: Registry = Registry("hashing objective", config_key="hash")

#: NT-Xent's temperature, a setting of both objectives
NTXENT_TAU = Number(0.3, "temperature of NT-Xent", minimum=0, exclusive_minimum=True)


def create_objective(name: str, bits: int, **settings) -> nn.Module:
    """The objective registered as ``name`` for ``bits``-bit codes, with ``settings`` overriding the
    defaults it declares (typed and range-checked)."""
    factory = OBJECTIVES.get(name)
    check_bits(bits)
    return factory(bits, **factory.settings.resolve(settings, name))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR's NT-Xent over the 2B rows of [z1; z2].

    Similarity is cosine / tau; the positive of row k is the other view of the
    same image, the negatives are the remaining 2B - 2 rows. Mean over rows.
    """
    batch = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.t() / tau
    self_pairs = torch.eye(2 * batch, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_pairs, float("-inf"))
    partner = torch.cat([torch.arange(batch, 2 * batch), torch.arange(0, batch)]).to(z.device)
    return F.cross_entropy(logits, partner)


def bernoulli_kl(u_p: torch.Tensor, u_q: torch.Tensor) -> torch.Tensor:
    """KL(Bern(sigmoid u_p) || Bern(sigmoid u_q)), summed over bits, mean over rows.

    Written with log-sigmoids of the logits, so saturated probabilities give
    finite values (no log(0)).
    """
    p = torch.sigmoid(u_p)
    kl = p * (F.logsigmoid(u_p) - F.logsigmoid(u_q)) + (1 - p) * (F.logsigmoid(-u_p) - F.logsigmoid(-u_q))
    return kl.sum(dim=1).mean()


@OBJECTIVES.register("cibhash")
class CIBHash(nn.Module):
    """CIBHash (Qiu et al., IJCAI 2021): contrastive + information-bottleneck KL.

    L = NTXent(b1, b2; tau) + beta * 1/2 [KL(p1 || sg p2) + KL(p2 || sg p1)].
    """

    settings = Options(tau=NTXENT_TAU, beta=Number(0.001, "weight of the KL term", minimum=0))

    def __init__(self, bits: int, tau: float, beta: float):
        super().__init__()
        self.bits, self.tau, self.beta = bits, tau, beta

    def codes(self, u: torch.Tensor) -> torch.Tensor:
        return hash_codes(u)

    def forward(self, u1: torch.Tensor, u2: torch.Tensor) -> dict[str, torch.Tensor]:
        ntxent = nt_xent(self.codes(u1), self.codes(u2), self.tau)
        kl = 0.5 * (bernoulli_kl(u1, u2.detach()) + bernoulli_kl(u2, u1.detach()))
        return {"loss": ntxent + self.beta * kl, "ntxent": ntxent, "kl": kl}
