"""``packd``: PACKD, Positive pair Aware Contrastive Knowledge Distillation.

Z. Yu, Q. Xu, Y. Jiang, H. Qin, Q. Huang: "Pay Attention to Your Positive
Pairs: Positive Pair Aware Contrastive Knowledge Distillation", ACM MM 2022;
the authors' code is github.com/smuelpeng/PACKD (``PACKDConLoss``).

Contrastive KD with several positives per anchor image i, on codes. The
student side S_i holds the student's embeddings of i's views, the teacher side
T_i the teacher's embeddings of the same views plus of i's positive partners.
One positive logit per anchor, weighted by the paper's optimal-transport plan:

    P_i = sum_{x in S_i, y in T_i} pi_xy <x, y>

pi: entropic OT plan between S_i and T_i (uniform marginals, cost ||x - y||^2,
log-domain Sinkhorn with eps 0.1, at most 100 iterations, stopped when the
batch-mean L1 change of the row potentials falls below 0.1 -- the authors'
``SinkhornDistance``), not differentiated. As in their code the marginals are
uniform, so every positive carries the same total mass 1/|T_i|; the plan
decides how it is shared among the student's views (with one view it is
uniform). Negatives: every student
view against the teacher memory bank (momentum 0.5) at 500 uniformly drawn
training positions, all in one denominator; tau = 0.07:

    L_i = -log( e^{P_i/tau} / (e^{P_i/tau} + sum_views sum_k e^{<s_v, m_k>/tau}) )

Adapted without labels. The paper's extra positives are same-class images
(its loader draws them, and every negative, with the ground-truth labels);
here the ``pos_k`` partners are the anchor's nearest training images in the
teacher's code space (Hamming distance, ties to the lower position), and
negatives are uniform. The teacher is frozen, so its view-1 outputs are
cached per training position as batches pass (``teacher_feats``, the view
last seen): the neighbour search needs no extra input from the trainer (the
alternative, the trainer passing the teacher's codes of all clean training
images, is a second input path for one method), a partner is embedded exactly
like the anchor's own teacher view (fresh, by ``embed_t``), and after one
epoch every image is a candidate -- until then only images already seen are.

Defaults are what the reference code (BRCD's copy of ``PACKDConLoss``) ran:
``pos_k: 0`` and ``views: first`` -- one view, no partners, so the plan is
1 x 1 and the loss is single-positive InfoNCE; codes in (``features``);
embedding dim 64, but when 64 >= bits the teacher's codes are only
L2-normalised (no linear map) and the student maps to ``bits`` dims
(``teacher_embed: auto``, the reference's ``feat_dim >= t_dim`` rule); the
anchor's own bank entry is one of the denominator's terms (its contrast
indices start with the anchor; ``self_in_denominator``); the bank is updated
before the negatives are read, with momentum 0 for the first 782 updates
(``bank_warmup``, the authors' CIFAR-100 epoch). ``views: both`` and
``pos_k > 0`` give the paper's several positives: the anchor's other view and
its neighbours. There is no positive-unlabeled weighting of negatives: it is
in neither the paper nor the code.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from brcd.distill.base import (VIEWS, KD_LOSSES, MAX_SIZE, MOMENTUM, TEMPERATURE, DistillLoss, KDBatch, MemoryBank,
                               apply_embeddings_option, embeddings_option,
                               bank_similarities, check_positions, features_option, l2_normalize, sample_negatives,
                               view_features, views_option)
from brcd.options import Choice, Flag, Int, Number, Options

TEACHER_EMBEDS = ("auto", "linear", "identity")


@torch.no_grad()
def sinkhorn_plan(cost: Tensor, valid: Tensor, eps: float, iterations: int, tolerance: float) -> Tensor:
    """Entropic OT plans (B, n, m) between uniform marginals, the authors' log-domain Sinkhorn.

    ``valid`` (B, m) marks the columns that exist (an anchor may have fewer
    partners than ``pos_k`` early on): the others get no mass, and the column
    marginal is uniform over the valid ones. Iterates until the batch mean of
    the L1 change of the row potentials is below ``tolerance``.
    """
    n = cost.shape[-2]
    log_mu = torch.full(cost.shape[:-1], -math.log(n), dtype=cost.dtype, device=cost.device)
    counts = valid.sum(-1, keepdim=True).to(cost.dtype)
    minus_inf = torch.tensor(float("-inf"), dtype=cost.dtype, device=cost.device)
    log_nu = torch.where(valid, -torch.log(counts), minus_inf)
    u = torch.zeros_like(log_mu)
    v = torch.where(valid, torch.zeros_like(log_nu), minus_inf)

    def scaled(u: Tensor, v: Tensor) -> Tensor:
        return (-cost + u.unsqueeze(-1) + v.unsqueeze(-2)) / eps

    for _ in range(int(iterations)):
        previous = u
        u = eps * (log_mu - torch.logsumexp(scaled(u, v), dim=-1)) + u
        v = torch.where(valid, eps * (log_nu - torch.logsumexp(scaled(u, v), dim=-2)) + v, minus_inf)
        if float((u - previous).abs().sum(-1).mean()) < tolerance:
            break
    return torch.exp(scaled(u, v))


@KD_LOSSES.register("packd")
class PACKD(DistillLoss):
    settings = Options(
        feat_dim=Int(64, "embedding dimension", minimum=1, maximum=MAX_SIZE),
        teacher_embed=Choice("auto", "how the teacher side is embedded", TEACHER_EMBEDS),
        negatives=Int(500, "negatives per anchor", minimum=1, maximum=MAX_SIZE),
        temperature=Number(0.07, TEMPERATURE, minimum=0, exclusive_minimum=True),
        momentum=MOMENTUM,
        bank_warmup=Int(782, "bank updates with momentum 0 first", minimum=0),
        self_in_denominator=Flag(True, "whether the anchor's own bank entry is a denominator term"),
        pos_k=Int(0, "positive partners per anchor (nearest in the teacher's codes)", minimum=0, maximum=MAX_SIZE),
        views=views_option(), features=features_option("codes"),
        sinkhorn_eps=Number(0.1, "entropic regularisation of the plan", minimum=0, exclusive_minimum=True),
        sinkhorn_iters=Int(100, "Sinkhorn iterations at most", minimum=1, maximum=MAX_SIZE),
        sinkhorn_tol=Number(0.1, "Sinkhorn stopping tolerance", minimum=0),
        embeddings=embeddings_option())

    def __init__(self, name, bits, num_train, options, clusters=None):
        super().__init__(name, bits, num_train, options)
        feat_dim = self.options["feat_dim"]
        mode = self.options["teacher_embed"]
        linear = mode == "linear" or (mode == "auto" and feat_dim < bits)
        dim = feat_dim if linear else bits
        self.embed_s = nn.Linear(bits, dim)
        self.embed_t = nn.Linear(bits, dim) if linear else None
        self.memory_t = MemoryBank(num_train, dim, self.options["momentum"])
        self.register_buffer("bank_updates", torch.zeros((), dtype=torch.long))
        # the frozen teacher's view-1 features (codes or logits) by training position, as last seen
        self.register_buffer("teacher_feats", torch.zeros(num_train, bits))
        self.register_buffer("seen", torch.zeros(num_train, dtype=torch.bool))
        apply_embeddings_option(self)  # ``embeddings: frozen``: the BRCD reference's untrained embeddings

    def embed_teacher(self, features: Tensor) -> Tensor:
        return l2_normalize(features if self.embed_t is None else self.embed_t(features))

    @torch.no_grad()
    def remember(self, positions: Tensor, features: Tensor, embedding: Tensor) -> None:
        """Cache the teacher's features and update its bank (before the negatives are read, as the reference)."""
        self.teacher_feats.index_copy_(0, positions, features.float())
        self.seen[positions] = True
        warm = int(self.bank_updates) < self.options["bank_warmup"]
        self.memory_t.update(positions, embedding, momentum=0.0 if warm else None)
        self.bank_updates += 1

    @torch.no_grad()
    def neighbours(self, positions: Tensor, anchor_features: Tensor) -> tuple[Tensor, Tensor]:
        """The ``pos_k`` seen training positions nearest to each anchor in teacher-code Hamming distance.

        Returns (B, k) positions and a (B, k) mask of the ones that exist.
        """
        k = min(self.options["pos_k"], self.num_train - 1)
        batch = len(positions)
        if k == 0:
            empty = torch.zeros(batch, 0, dtype=torch.long, device=positions.device)
            return empty, empty.bool()
        codes = torch.where(self.teacher_feats >= 0, 1.0, -1.0).double()
        anchors = torch.where(anchor_features >= 0, 1.0, -1.0).double()
        hamming = (self.bits - anchors @ codes.t()) / 2  # (B, N)
        # ties go to the lower position: an exact, device-independent order
        key = hamming * self.num_train + torch.arange(self.num_train, device=codes.device, dtype=codes.dtype)
        excluded = ~self.seen.unsqueeze(0).expand(batch, -1).clone()
        excluded[torch.arange(batch, device=positions.device), positions] = True
        key = key.masked_fill(excluded, float("inf"))
        nearest = torch.topk(key, k, dim=1, largest=False)
        return nearest.indices, torch.isfinite(nearest.values)

    def contrast_positions(self, positions: Tensor) -> Tensor:
        negatives = sample_negatives(positions, self.options["negatives"], self.num_train)
        if self.options["self_in_denominator"]:
            return torch.cat([positions[:, None], negatives], dim=1)
        return negatives

    def forward(self, batch: KDBatch) -> dict[str, Tensor]:
        check_positions(batch.index, self.num_train, self.name)
        positions = batch.index.long()
        feats = [view_features(batch, v, self.options["features"]) for v in VIEWS[self.options["views"]]]
        e_s = torch.stack([l2_normalize(self.embed_s(s)) for s, _ in feats], dim=1)  # (B, n, D)
        e_t = torch.stack([self.embed_teacher(t) for _, t in feats], dim=1)  # (B, n, D)
        if self.training:
            self.remember(positions, feats[0][1], e_t[:, 0])
        partners, valid = self.neighbours(positions, feats[0][1])
        e_t = torch.cat([e_t, self.embed_teacher(self.teacher_feats[partners])], dim=1)  # (B, m, D)
        valid = torch.cat([valid.new_ones(e_s.shape[:2]), valid], dim=1)  # (B, m)

        similarity = e_s @ e_t.transpose(1, 2)  # (B, n, m)
        cost = ((e_s.unsqueeze(2) - e_t.unsqueeze(1)) ** 2).sum(-1).detach()
        plan = sinkhorn_plan(cost, valid, self.options["sinkhorn_eps"], self.options["sinkhorn_iters"],
                             self.options["sinkhorn_tol"])
        temperature = self.options["temperature"]
        positive = (plan * similarity).sum(dim=(1, 2)) / temperature  # (B,)
        # every view against the bank at the contrast positions: (B, n, K') -> (B, n K')
        contrast = self.contrast_positions(positions)
        negative = bank_similarities(self.memory_t.memory, contrast, e_s).flatten(1) / temperature
        logits = torch.cat([positive.unsqueeze(1), negative], dim=1)
        loss = (torch.logsumexp(logits, dim=1) - positive).mean()
        return {"loss": loss, "positives": valid.sum(1).float().mean().detach()}
