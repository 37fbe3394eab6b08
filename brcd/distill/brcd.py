"""``brcd``: bit-mask robust contrastive distillation (SPEC §4), and its ablations.

For B images at training positions i_k with student view-1 codes s_k,
teacher view-1 codes t_k, teacher view-2 codes t'_k and masks m_k = M[c(i_k)]:

- c'(k) = argmin_c ||t'_k - mu_c||^2; alpha_k = 1 if c'(k) != c(i_k)
  (an offset positive: the augmentation drifted), else alpha;
- rows e_k = s_k * m_k, e_{B+k} = t'_k * m_k;
- P_k = alpha_k cos(s_k, t_k)/tau + (1 - alpha_k) cos(e_k, e_{B+k})/tau
  for rows k and B+k;
- negatives of row a: cos(e_a, e_b)/tau for b not in {a, partner(a)}, minus
  false negatives (rows whose clusters coincide; student row k has cluster
  c(i_k), teacher row B+k has c'(k));
- L = mean over 2B rows of -log(e^P / (e^P + sum of negatives)).

Cosines of an all-zero masked row (a cluster that keeps no bits) are 0.

Ablations: ``brcd_nocluster`` (alpha_k = alpha, no false-negative removal),
``brcd_nomask`` (m = 1), ``brcd_plain`` (neither). All variants take the
clusters file, so that they run on the same inputs as ``brcd``.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from brcd.distill.base import (KD_LOSSES, DistillLoss, KDBatch, check_positions, safe_cosine,
                               safe_cosine_matrix)
from brcd.config import check_k_feasible, cluster_settings
from brcd.errors import ConfigError, MetadataMismatchError
from brcd.options import Number, Options


def check_cluster_count(config: Mapping, dataset: str, num_train: int, source: str = "config") -> None:
    """Config check: the grid's K (`brcd.clusters`, or `brcd.cluster_range` with `auto`) fits the
    ``num_train`` training images of ``dataset``, when a method of the grid needs clusters -- before the
    teacher trains, instead of in the cluster job after it."""
    if not any(KD_LOSSES.get(kd).needs_clusters for kd in config.get("kd", [])):
        return
    settings = cluster_settings(config.get("brcd"))
    try:
        check_k_feasible(settings["clusters"], settings["cluster_range"], num_train, num_train)
    except ConfigError as exc:
        raise ConfigError(f"{source}: `datasets.{dataset}` draws {num_train} training images: {exc}") from None


def check_clusters(clusters, bits: int, num_train: int) -> None:
    """The clusters must come from codes of this bit length and this training split."""
    fix = "Rebuild the clusters for this cell with `brcd cluster` (the teacher's codes of this split and bit length)."
    if clusters.bits != bits:
        raise MetadataMismatchError(f"the clusters are for {clusters.bits}-bit codes, the student has {bits} bits. {fix}")
    if clusters.num_train != num_train:
        raise MetadataMismatchError(
            f"the clusters cover {clusters.num_train} training images, the trainer has {num_train}. {fix}"
        )
    if np.any(np.diff(np.asarray(clusters.index)) <= 0):
        raise MetadataMismatchError(
            "the clusters' rows are not in ascending dataset-index order, so they cannot be addressed by training "
            f"position (the order of Splits.indices['train']). {fix}"
        )


@KD_LOSSES.register("brcd")
class BRCD(DistillLoss):
    needs_clusters = True
    use_clusters = True  # offset-positive detection and false-negative removal
    use_mask = True
    settings = Options(alpha=Number(0.8, "weight of the individual term of a positive that stayed in its cluster",
                                    minimum=0, maximum=1),
                       tau=Number(0.3, "temperature of the cosines", minimum=0, exclusive_minimum=True))

    @classmethod
    def resolve_options(cls, name: str, settings: Mapping[str, Any], where: str | None = None) -> dict:
        # alpha and tau live directly in the config's `brcd` section (the
        # other keys there, clusters/margin, are not the loss's business);
        # settings[name], if given, overrides them for one variant.
        options = super().resolve_options(name, settings, where)  # the defaults, overridden by settings[name]
        top_level = cls.settings.parse({key: settings[key] for key in cls.settings if key in settings}, "brcd")
        return {**options, **{key: value for key, value in top_level.items() if key not in settings.get(name, {})}}

    def __init__(self, name, bits, num_train, options, clusters=None):
        super().__init__(name, bits, num_train, options)
        check_clusters(clusters, self.bits, self.num_train)
        # assignment[p] is the cluster of training position p (rows in Splits.indices["train"] order)
        self.register_buffer("cluster_of", torch.as_tensor(np.asarray(clusters.assignment), dtype=torch.long))
        self.register_buffer("centres", torch.as_tensor(np.asarray(clusters.centres), dtype=torch.float32))
        self.register_buffer("mask", torch.as_tensor(np.asarray(clusters.mask), dtype=torch.float32))

    def forward(self, batch: KDBatch) -> dict[str, Tensor]:
        check_positions(batch.index, self.num_train, self.name)
        alpha, tau = self.options["alpha"], self.options["tau"]
        s = batch.s_codes[0]
        t = batch.t_codes[0].detach().to(s.dtype)
        t_aug = batch.t_codes[1].detach().to(s.dtype)
        b = s.shape[0]

        cluster = self.cluster_of[batch.index.long()]
        aug_cluster = ((t_aug.unsqueeze(1) - self.centres.unsqueeze(0)) ** 2).sum(-1).argmin(1)
        offset = aug_cluster != cluster
        if self.use_clusters:
            alpha_k = torch.where(offset, torch.ones_like(t[:, 0]), torch.full_like(t[:, 0], alpha))
        else:
            alpha_k = torch.full_like(t[:, 0], alpha)
        mask = self.mask[cluster] if self.use_mask else torch.ones_like(s)

        rows = torch.cat([s * mask, t_aug * mask])  # e_1..e_B, e_{B+1}..e_{2B}
        sim = safe_cosine_matrix(rows, rows) / tau
        individual = safe_cosine(s, t) / tau
        structural = sim.diagonal(offset=b)  # cos(e_k, e_{B+k}) / tau, the same for rows k and B+k
        a2 = torch.cat([alpha_k, alpha_k])
        positive = a2 * torch.cat([individual, individual]) + (1 - a2) * torch.cat([structural, structural])

        position = torch.arange(2 * b, device=s.device)
        partner = (position + b) % (2 * b)
        negative = (position[:, None] != position[None, :]) & (partner[:, None] != position[None, :])
        if self.use_clusters:
            row_cluster = torch.cat([cluster, aug_cluster])
            false_negative = row_cluster[:, None] == row_cluster[None, :]
            removed = (negative & false_negative).sum()
            negative = negative & ~false_negative
        else:
            removed = torch.zeros((), device=s.device)
        logits = torch.cat([positive[:, None], sim.masked_fill(~negative, float("-inf"))], dim=1)
        loss = (torch.logsumexp(logits, dim=1) - positive).mean()
        pairs = max(2 * b * (2 * b - 2), 1)
        return {
            "loss": loss,
            "offset_positives": offset.float().mean().detach(),
            "false_negatives": (removed.float() / pairs).detach(),
            "bits_kept": mask.sum(1).mean().detach(),
        }


@KD_LOSSES.register("brcd_nocluster")
class BRCDNoCluster(BRCD):
    use_clusters = False


@KD_LOSSES.register("brcd_nomask")
class BRCDNoMask(BRCD):
    use_mask = False


@KD_LOSSES.register("brcd_plain")
class BRCDPlain(BRCD):
    use_clusters = False
    use_mask = False
