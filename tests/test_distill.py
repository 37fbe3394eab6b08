"""Distillation-loss registry: BRCD against a hand computation of SPEC §4, and
every registered loss on a tiny student/teacher pair."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from brcd.cluster import Clusters, bit_mask, build_clusters
from brcd.distill import KD_LOSSES, KDBatch, create_distill_loss
from brcd.hashing import hash_codes
from brcd.errors import ConfigError, MetadataMismatchError

torch.set_num_threads(1)

ALL_METHODS = ["none", "kd", "rkd", "pkt", "sp", "crd", "crcd", "sskd", "packd",
               "brcd", "brcd_nocluster", "brcd_nomask", "brcd_plain"]
BRCD_SETTINGS = {"clusters": 4, "margin": 0.5, "alpha": 0.8, "tau": 0.3, "lambda": 1.0}
BITS, N, DIM, CLASSES = 16, 48, 12, 4


def test_registry_holds_brcd_its_ablations_and_eight_baselines():
    assert KD_LOSSES.names() == sorted(ALL_METHODS)


def test_config_axis_kd_is_checked_against_the_registry():
    from brcd.config import AXIS_REGISTRIES

    assert AXIS_REGISTRIES["kd"]() == sorted(ALL_METHODS)


def test_unknown_method_lists_allowed_names():
    with pytest.raises(ConfigError, match=r"`kd`.*allowed values: brcd, brcd_nocluster"):
        create_distill_loss("fitnets", BITS, N, BRCD_SETTINGS)


@pytest.mark.parametrize("name", [n for n in ALL_METHODS if KD_LOSSES.get(n).needs_clusters])
def test_cluster_losses_without_clusters_are_a_config_error(name):
    with pytest.raises(ConfigError, match="needs the teacher's clusters: run the cluster rule / pass --clusters"):
        create_distill_loss(name, BITS, N, BRCD_SETTINGS)


@pytest.mark.parametrize("settings, match", [
    ({"kd": {"T": 3}}, "unknown setting"),
    ({"rkd": {"features": "pixels"}}, "features"),
])
def test_bad_per_method_settings(settings, match):
    name = next(iter(settings))
    with pytest.raises(ConfigError, match=match):
        create_distill_loss(name, BITS, N, settings)


# ---------------------------------------------------------------- BRCD by hand


def cosine(x, y):
    nx, ny = math.sqrt(sum(v * v for v in x)), math.sqrt(sum(v * v for v in y))
    if nx == 0 or ny == 0:
        return 0.0
    return sum(a * b for a, b in zip(x, y)) / (nx * ny)


def reference_brcd(s, t, t_aug, cluster, centres, mask, alpha, tau, use_clusters, use_mask):
    """SPEC §4 written out with plain loops."""
    b, bits = len(s), len(s[0])
    aug_cluster = []
    for k in range(b):
        dist = [sum((t_aug[k][l] - mu[l]) ** 2 for l in range(bits)) for mu in centres]
        aug_cluster.append(dist.index(min(dist)))
    alphas = [1.0 if use_clusters and aug_cluster[k] != cluster[k] else alpha for k in range(b)]
    masks = [mask[cluster[k]] if use_mask else [1] * bits for k in range(b)]
    rows = [[s[k][l] * masks[k][l] for l in range(bits)] for k in range(b)]
    rows += [[t_aug[k][l] * masks[k][l] for l in range(bits)] for k in range(b)]
    row_cluster = list(cluster) + aug_cluster
    total = 0.0
    for a in range(2 * b):
        k, partner = a % b, (a + b) % (2 * b)
        positive = alphas[k] * cosine(s[k], t[k]) / tau + (1 - alphas[k]) * cosine(rows[k], rows[b + k]) / tau
        denominator = math.exp(positive)
        for other in range(2 * b):
            if other in (a, partner):
                continue
            if use_clusters and row_cluster[a] == row_cluster[other]:
                continue  # false negative
            denominator += math.exp(cosine(rows[a], rows[other]) / tau)
        total += -math.log(math.exp(positive) / denominator)
    return total / (2 * b), aug_cluster


def hand_cell():
    """6 training images in 3 clusters of 8-bit codes; a batch of 4 of them."""
    centres = np.array([
        [1.0, 1.0, 1.0, 1.0, 0.2, -0.2, 0.6, 0.0],
        [-1.0, -1.0, 0.6, -0.6, 1.0, 1.0, 0.0, 0.3],
        [0.0, 0.6, -1.0, -1.0, -1.0, 0.8, -0.6, 1.0],
    ])
    clusters = Clusters(index=np.array([3, 5, 8, 9, 12, 20]), assignment=np.array([0, 1, 0, 2, 0, 1]),
                        centres=centres, mask=bit_mask(centres, 0.5), metadata={})
    positions = torch.tensor([0, 2, 1, 3])  # clusters 0, 0, 1, 2: one pair of same-cluster images
    s = torch.tensor([[1, 1, 1, -1, 1, -1, 1, 1], [1, 1, 1, 1, -1, 1, 1, -1],
                      [-1, -1, 1, -1, 1, 1, -1, 1], [-1, 1, -1, -1, -1, 1, -1, 1]], dtype=torch.float32)
    t = torch.tensor([[1, 1, 1, 1, 1, -1, 1, -1], [1, 1, 1, 1, -1, -1, 1, 1],
                      [-1, -1, 1, -1, 1, 1, 1, 1], [1, 1, -1, -1, -1, 1, -1, 1]], dtype=torch.float32)
    t_aug = torch.tensor([[1, 1, 1, 1, 1, 1, 1, -1],
                          [-1, -1, 1, -1, 1, 1, -1, 1],  # drifted to cluster 1: an offset positive
                          [-1, -1, 1, -1, 1, 1, 1, -1], [1, 1, -1, -1, -1, 1, -1, 1]], dtype=torch.float32)
    return clusters, positions, s, t, t_aug


def hand_batch(positions, s, t, t_aug):
    s = s.clone().requires_grad_(True)
    return KDBatch(index=positions, s_logits=(s, s), s_codes=(s, s), t_logits=(t, t_aug), t_codes=(t, t_aug)), s


@pytest.mark.parametrize("name, use_clusters, use_mask", [
    ("brcd", True, True), ("brcd_nocluster", False, True), ("brcd_nomask", True, False), ("brcd_plain", False, False),
])
def test_brcd_equals_the_hand_computation(name, use_clusters, use_mask):
    clusters, positions, s, t, t_aug = hand_cell()
    cluster = clusters.assignment[positions.numpy()].tolist()
    expected, aug_cluster = reference_brcd(s.tolist(), t.tolist(), t_aug.tolist(), cluster, clusters.centres.tolist(),
                                           clusters.mask.tolist(), 0.8, 0.3, use_clusters, use_mask)
    # the cell exercises what it should: one offset positive, some false negatives
    assert [c != a for c, a in zip(cluster, aug_cluster)] == [False, True, False, False]
    loss_fn = create_distill_loss(name, 8, 6, BRCD_SETTINGS, clusters)
    batch, _ = hand_batch(positions, s, t, t_aug)
    out = loss_fn(batch)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    if use_clusters:
        assert out["offset_positives"].item() == pytest.approx(0.25)
        assert out["false_negatives"].item() > 0


def test_brcd_alpha_switch_and_false_negative_removal_change_the_loss():
    clusters, positions, s, t, t_aug = hand_cell()
    cluster = clusters.assignment[positions.numpy()].tolist()
    args = (s.tolist(), t.tolist(), t_aug.tolist(), cluster, clusters.centres.tolist(), clusters.mask.tolist(), 0.8, 0.3)
    with_clusters, _ = reference_brcd(*args, True, True)
    without, _ = reference_brcd(*args, False, True)
    assert abs(with_clusters - without) > 1e-3


def test_brcd_cluster_that_keeps_no_bits_gives_a_finite_loss():
    clusters, positions, s, t, t_aug = hand_cell()
    clusters.mask[:] = 0  # no cluster keeps any bit: every masked row is all zero
    loss_fn = create_distill_loss("brcd", 8, 6, BRCD_SETTINGS, clusters)
    batch, s_leaf = hand_batch(positions, s, t, t_aug)
    out = loss_fn(batch)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert torch.isfinite(s_leaf.grad).all()
    assert out["bits_kept"].item() == 0


def test_brcd_rejects_clusters_of_another_bit_length_or_split():
    clusters, *_ = hand_cell()
    with pytest.raises(MetadataMismatchError, match="8-bit"):
        create_distill_loss("brcd", 16, 6, BRCD_SETTINGS, clusters)
    with pytest.raises(MetadataMismatchError, match="6 training images"):
        create_distill_loss("brcd", 8, 7, BRCD_SETTINGS, clusters)


@pytest.mark.parametrize("settings, key", [({"alpha": 1.5}, "brcd.alpha"), ({"tau": 0.0}, "brcd.tau")])
def test_brcd_bad_settings(settings, key):
    clusters, *_ = hand_cell()
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        create_distill_loss("brcd", 8, 6, {**BRCD_SETTINGS, **settings}, clusters)


# ---------------------------------------------------------------- every loss on a tiny student


class Cell:
    """Random features with class structure, two augmented views, four
    'rotations' (fixed linear maps), a frozen Linear teacher and its clusters."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(N) % CLASSES
        # instance spread large enough that most images get their own teacher code
        clean = (torch.randn(CLASSES, DIM, generator=g) * 2)[labels] + torch.randn(N, DIM, generator=g)
        self.views = [clean + 0.3 * torch.randn(N, DIM, generator=g) for _ in range(2)]
        maps = [torch.eye(DIM)] + [torch.linalg.qr(torch.randn(DIM, DIM, generator=g))[0] for _ in range(3)]
        self.rotations = torch.stack([self.views[0] @ m for m in maps], dim=1)  # (N, 4, DIM)
        torch.manual_seed(seed)
        self.teacher = nn.Linear(DIM, BITS)
        self.teacher.requires_grad_(False)
        with torch.no_grad():
            codes = torch.where(self.teacher(clean) >= 0, 1, -1).numpy().astype(np.int8)
        self.clusters = build_clusters(codes, np.arange(N), {"clusters": CLASSES}, seed=0)

    def batch(self, head, index):
        s_logits = tuple(head(v[index]) for v in self.views)
        with torch.no_grad():
            t_logits = tuple(self.teacher(v[index]) for v in self.views)
            t_rot = self.teacher(self.rotations[index])
        return KDBatch(index=index, s_logits=s_logits, s_codes=tuple(hash_codes(u) for u in s_logits),
                       t_logits=t_logits, t_codes=tuple(torch.where(u >= 0, 1.0, -1.0) for u in t_logits),
                       s_rot_logits=head(self.rotations[index]), t_rot_logits=t_rot)


@pytest.fixture(scope="module")
def cell():
    return Cell()


@pytest.mark.parametrize("name", ALL_METHODS)
def test_loss_is_finite_and_only_student_side_gets_gradients(cell, name):
    torch.manual_seed(1)
    head = nn.Linear(DIM, BITS)
    loss_fn = create_distill_loss(name, BITS, N, BRCD_SETTINGS, cell.clusters)
    batch = cell.batch(head, torch.randperm(N)[:16])
    out = loss_fn(batch)
    assert all(torch.isfinite(v).all() for v in out.values()), out
    out["loss"].backward()
    assert all(p.grad is None for p in cell.teacher.parameters())
    assert not any(x.requires_grad for x in (*batch.t_logits, *batch.t_codes, batch.t_rot_logits))
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
    assert all(p.grad is not None for p in loss_fn.parameters())
    assert all(not b.requires_grad for b in loss_fn.buffers())
    if name == "none":
        assert out["loss"].item() == 0.0 and head.weight.grad.abs().sum() == 0
    else:
        assert head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", [n for n in ALL_METHODS if n != "none"])
def test_loss_decreases_when_the_student_head_trains_on_it(cell, name):
    torch.manual_seed(2)
    head = nn.Linear(DIM, BITS)
    settings = dict(BRCD_SETTINGS)
    if name in ("crd", "crcd", "packd"):
        settings[name] = {"negatives": 64}  # keeps the test quick
    loss_fn = create_distill_loss(name, BITS, N, settings, cell.clusters)
    optimizer = torch.optim.Adam([*head.parameters(), *loss_fn.parameters()], lr=1e-2)
    index = torch.arange(N)
    losses = []
    for _ in range(50):
        loss = loss_fn(cell.batch(head, index))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


def test_sskd_requires_rotations(cell):
    loss_fn = create_distill_loss("sskd", BITS, N, {})
    assert loss_fn.needs_rotations
    batch = cell.batch(nn.Linear(DIM, BITS), torch.arange(8))
    batch.s_rot_logits = None
    with pytest.raises(ValueError, match="rotations"):
        loss_fn(batch)


def test_memory_losses_reject_positions_outside_the_training_split(cell):
    loss_fn = create_distill_loss("crd", BITS, N, {})
    batch = cell.batch(nn.Linear(DIM, BITS), torch.arange(8))
    batch.index = batch.index + N
    with pytest.raises(IndexError, match="training positions"):
        loss_fn(batch)


def test_memory_banks_are_buffers_and_embeddings_parameters():
    loss_fn = create_distill_loss("crd", BITS, N, {})
    buffers = dict(loss_fn.named_buffers())
    assert buffers["memory_s.memory"].shape == (N, 128) and buffers["memory_t.memory"].shape == (N, 128)
    assert {n.split(".")[0] for n, _ in loss_fn.named_parameters()} == {"embed_s", "embed_t"}
    assert dict(create_distill_loss("packd", BITS, N, {}).named_parameters())["embed_s.weight"].shape == (64, BITS)
