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
    from brcd.checks import AXIS_REGISTRIES

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
    # rkd on straight-through codes oscillates at 1e-2 (its loss is piecewise constant in the codes; before
    # issue 27 the 1e12 gradients of coinciding codes drove it like a sign step)
    lr = 3e-3 if name == "rkd" else 1e-2
    optimizer = torch.optim.Adam([*head.parameters(), *loss_fn.parameters()], lr=lr)
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


@pytest.mark.parametrize("n_rows", [20, 2000])  # a product with the whole bank, or the rows copied out
@pytest.mark.parametrize("views", [None, 2])
@pytest.mark.parametrize("kernels", [True, False])  # the compiled kernels (CPU), or torch ops (other devices)
def test_bank_similarities_are_the_dot_products_with_the_rows_read(monkeypatch, n_rows, views, kernels):
    import brcd.distill.base as base

    monkeypatch.setattr(base, "KERNELS", kernels)
    torch.manual_seed(8)
    memory = torch.randn(n_rows, 6)
    positions = torch.randint(0, n_rows, (3, 5))
    sample = torch.randn(3, 6) if views is None else torch.randn(3, views, 6)
    sample.requires_grad_(True)
    rows = memory[positions].clone()
    out = base.bank_similarities(memory, positions, sample)
    assert torch.allclose(out, torch.einsum("b...d,bkd->b...k", sample.detach(), rows), atol=1e-6)
    weights = torch.randn(out.shape)
    expected = torch.einsum("b...k,bkd->b...d", weights, rows)
    if kernels:  # the bank itself is kept for the backward pass: changing it before that pass is an error
        memory.mul_(2.0)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            (out * weights).sum().backward()
        return
    memory.mul_(2.0)  # elsewhere the product keeps a copy: the gradient keeps the rows read
    (out * weights).sum().backward()
    assert torch.allclose(sample.grad, expected, atol=1e-5)


def test_bank_similarities_gradient_reads_the_rows_read():
    from brcd.distill.base import bank_similarities

    torch.manual_seed(9)
    memory, positions = torch.randn(50, 6), torch.randint(0, 50, (3, 5))
    sample = torch.randn(3, 2, 6, requires_grad=True)
    out = bank_similarities(memory, positions, sample)
    weights = torch.randn(out.shape)
    (out * weights).sum().backward()
    assert torch.allclose(sample.grad, torch.einsum("b...k,bkd->b...d", weights, memory[positions]), atol=1e-5)


def test_crd_and_crcd_update_their_banks_before_their_next_forward_pass(cell):
    """The update is queued (the backward pass reads the banks unchanged) and applied before the banks are read
    again: by the next forward pass, or by state_dict."""
    for name in ("crd", "crcd"):
        torch.manual_seed(3)
        loss_fn = create_distill_loss(name, BITS, N, {name: {"negatives": 8}})
        before = loss_fn.memory_t.memory.clone()
        head = nn.Linear(DIM, BITS)
        loss_fn(cell.batch(head, torch.arange(8)))["loss"].backward()  # no error: the banks are unchanged until now
        assert torch.equal(loss_fn.memory_t.memory, before)
        state = loss_fn.state_dict()
        assert not torch.equal(state["memory_t.memory"][:8], before[:8])  # applied: the batch's rows moved
        assert torch.equal(state["memory_t.memory"][8:], before[8:])


def test_memory_banks_are_buffers_and_embeddings_parameters():
    loss_fn = create_distill_loss("crd", BITS, N, {})
    buffers = dict(loss_fn.named_buffers())
    assert buffers["memory_s.memory"].shape == (N, 128) and buffers["memory_t.memory"].shape == (N, 128)
    assert {n.split(".")[0] for n, _ in loss_fn.named_parameters()} == {"embed_s", "embed_t"}


def test_packd_embeddings_follow_the_reference_feat_dim_rule():
    # bits <= feat_dim (64): the teacher's codes are only normalised, the student maps to `bits` dims
    small = create_distill_loss("packd", BITS, N, {})
    assert small.embed_t is None and small.embed_s.weight.shape == (BITS, BITS)
    assert small.memory_t.memory.shape == (N, BITS)
    # bits > feat_dim: both sides get a linear 64-d embedding; `teacher_embed: linear` forces it
    large = create_distill_loss("packd", 128, N, {})
    assert large.embed_s.weight.shape == (64, 128) and large.embed_t.weight.shape == (64, 128)
    forced = create_distill_loss("packd", BITS, N, {"packd": {"teacher_embed": "linear"}})
    assert forced.embed_t.weight.shape == (64, BITS)


# ---------------------------------------------------------------- reference settings and options


def test_defaults_are_what_the_reference_code_ran():
    expected = {
        "kd": {"views": "first", "temperature": 4.0},
        "rkd": {"features": "codes", "views": "first"},
        "pkt": {"features": "codes", "views": "first"},
        "sp": {"features": "codes", "views": "first", "gram": "batch"},
        "crd": {"features": "codes", "feat_dim": 128, "negatives": 500, "nce_t": 0.05, "momentum": 0.5},
        "crcd": {"features": "codes", "anchors": "all", "self_pairs": True},
        "sskd": {"features": "codes", "ss_ratio": 1.0, "temperature": 0.5},
        "packd": {"features": "codes", "views": "first", "pos_k": 0, "feat_dim": 64, "negatives": 500,
                  "temperature": 0.07, "momentum": 0.5, "sinkhorn_eps": 0.1, "self_in_denominator": True},
    }
    for name, values in expected.items():
        defaults = KD_LOSSES.get(name).defaults
        assert {k: defaults[k] for k in values} == values, name
    assert not any("pu" in key for key in KD_LOSSES.get("packd").defaults)


@pytest.mark.parametrize("name", ["kd", "rkd", "pkt", "sp"])
def test_views_first_reads_view_one_only_and_both_reads_both(cell, name):
    torch.manual_seed(3)
    head = nn.Linear(DIM, BITS)
    batch = cell.batch(head, torch.arange(12))
    other = cell.batch(head, torch.arange(12, 24))
    changed = KDBatch(index=batch.index, s_logits=(batch.s_logits[0], other.s_logits[1]),
                      s_codes=(batch.s_codes[0], other.s_codes[1]), t_logits=(batch.t_logits[0], other.t_logits[1]),
                      t_codes=(batch.t_codes[0], other.t_codes[1]))
    first = create_distill_loss(name, BITS, N, {})
    assert first(changed)["loss"].item() == pytest.approx(first(batch)["loss"].item(), rel=1e-6)
    both = create_distill_loss(name, BITS, N, {name: {"views": "both"}})
    assert abs(both(changed)["loss"].item() - both(batch)["loss"].item()) > 1e-4


@pytest.mark.parametrize("settings, match", [
    ({"kd": {"views": "second"}}, r"`kd\.views` must be one of first, both"),
    ({"crcd": {"anchors": 0}}, r"`crcd\.anchors` must be \"all\" or an integer in \[1, 100000\]; got 0"),
    ({"crcd": {"self_pairs": "yes"}}, r"`crcd\.self_pairs` must be true or false"),
    ({"sskd": {"ss_ratio": 1.5}}, r"`sskd\.ss_ratio` must be a finite number in \[0, 1\]; got 1.5"),
    ({"sp": {"gram": "image"}}, r"`sp\.gram` must be one of batch, per_image"),
    ({"packd": {"pos_k": -1}}, r"`packd\.pos_k` must be an integer in \[0, 100000\]; got -1"),
    ({"packd": {"teacher_embed": "mlp"}}, r"`packd\.teacher_embed` must be one of auto, linear, identity"),
    ({"packd": {"pu_temperature": 0.05}}, "unknown setting"),
    # issue 28: values that passed the check and then crashed (or trained silently) in the training job
    ({"crd": {"negatives": -5}}, r"`crd\.negatives` must be an integer in \[1, 100000\]; got -5"),
    ({"crd": {"negatives": "many"}}, r"`crd\.negatives` must be an integer in \[1, 100000\]; got 'many'"),
    ({"crd": {"negatives": 500.5}}, r"`crd\.negatives` must be an integer"),
    ({"kd": {"temperature": 0}}, r"`kd\.temperature` must be a finite number > 0; got 0"),
    ({"kd": {"temperature": -1}}, r"`kd\.temperature` must be a finite number > 0; got -1"),
    ({"kd": {"temperature": float("inf")}}, r"`kd\.temperature` must be a finite number > 0; got inf"),
    ({"crd": {"nce_t": 0}}, r"`crd\.nce_t` must be a finite number > 0"),
    ({"crd": {"momentum": 1.5}}, r"`crd\.momentum` must be a finite number in \[0, 1\]"),
    ({"rkd": {"angle_weight": -1}}, r"`rkd\.angle_weight` must be a finite number >= 0"),
    ({"brcd": {"tau": 0}}, r"`brcd\.tau` must be a finite number > 0"),
])
def test_bad_option_values_name_the_key(settings, match):
    name = next(iter(settings))
    with pytest.raises(ConfigError, match=match):
        create_distill_loss(name, BITS, N, settings)


def test_sp_per_image_reproduces_the_reference_list_api_misuse(cell):
    """The reference's ``sum(Similarity()(z_i, t_z_i))`` written as it executes: zip over images."""
    torch.manual_seed(4)
    batch = cell.batch(nn.Linear(DIM, BITS), torch.arange(10))
    s, t = batch.s_codes[0].detach(), batch.t_codes[0]
    expected = 0.0
    for f_s, f_t in zip(s, t):  # what the reference's zip(g_s, g_t) does with tensors
        bsz = f_s.shape[0]
        g_s = torch.nn.functional.normalize(f_s.view(bsz, -1) @ f_s.view(bsz, -1).t())
        g_t = torch.nn.functional.normalize(f_t.view(bsz, -1) @ f_t.view(bsz, -1).t())
        expected += float(((g_t - g_s) ** 2).sum() / (bsz * bsz))
    per_image = create_distill_loss("sp", BITS, N, {"sp": {"gram": "per_image"}})
    assert per_image(batch)["loss"].item() == pytest.approx(expected, rel=1e-5)
    batch_gram = create_distill_loss("sp", BITS, N, {})(batch)["loss"].item()
    assert abs(batch_gram - expected) > 1e-3  # the published SP is a different loss


# ---------------------------------------------------------------- crcd against the reference's relation code


def reference_crcd_side(memory, v, y, idx, temperature, n_data, rows):
    """One side of the reference ``ContrastMemory`` (CRCD) + ``ContrastLoss``, explicit (B, B, K+1, D) tensors."""
    b, d = v.shape
    anchor = memory[y]
    weight = memory[idx]
    anchor_rel = torch.nn.functional.normalize((v.unsqueeze(1) - anchor.unsqueeze(0) + 1e-6).reshape(b * b, d), dim=1)
    weight_rel = weight.unsqueeze(1) - anchor.unsqueeze(1).unsqueeze(0) + 1e-6
    weight_rel = torch.nn.functional.normalize(weight_rel.reshape(b * b, idx.shape[1], d), dim=2)
    out = torch.bmm(weight_rel, anchor_rel.unsqueeze(2)).squeeze(2)[rows.reshape(-1)]
    out = torch.exp(out / temperature)
    out = out / (out.mean() * n_data)
    m = out.shape[1] - 1
    noise = m / n_data
    log_d1 = torch.log(out[:, 0] / (out[:, 0] + noise + 1e-7))
    log_d0 = torch.log(noise / (out[:, 1:] + noise + 1e-7))
    return float(-(log_d1.sum() + log_d0.sum()) / out.shape[0])


@pytest.mark.parametrize("self_pairs", [True, False])
def test_crcd_equals_the_reference_relation_computation(monkeypatch, self_pairs):
    import brcd.distill.crd as crd_module

    n_train, batch_size = 10, 4
    positions = torch.tensor([2, 7, 0, 5])
    # negatives that hit other anchors (6 of them): zero relations, the +1e-6 case of the reference
    negatives = torch.tensor([[7, 3, 0], [1, 2, 9], [5, 5, 4], [8, 0, 6]])
    monkeypatch.setattr(crd_module, "sample_negatives", lambda *args: negatives)
    torch.manual_seed(5)
    loss_fn = create_distill_loss("crcd", BITS, n_train, {"crcd": {"feat_dim": 8, "self_pairs": self_pairs}})
    s = torch.randn(batch_size, BITS)
    t = torch.where(torch.randn(batch_size, BITS) >= 0, 1.0, -1.0)
    batch = KDBatch(index=positions, s_logits=(s, s), s_codes=(s, s), t_logits=(t, t), t_codes=(t, t))
    memory_s, memory_t = loss_fn.memory_s.memory.clone(), loss_fn.memory_t.memory.clone()
    with torch.no_grad():
        v_s = torch.nn.functional.normalize(loss_fn.embed_s(s), dim=1)
        v_t = torch.nn.functional.normalize(loss_fn.embed_t(t), dim=1)
    out = loss_fn(batch)
    idx = torch.cat([positions[:, None], negatives], dim=1)
    rows = ~torch.eye(batch_size, dtype=torch.bool) | self_pairs  # which (b, a) pairs count
    expected_s = reference_crcd_side(memory_t, v_s, positions, idx, 0.05, n_train, rows)
    expected_t = reference_crcd_side(memory_s, v_t, positions, idx, 0.05, n_train, rows)
    assert out["student_nce"].item() == pytest.approx(expected_s, rel=1e-4)
    assert out["teacher_nce"].item() == pytest.approx(expected_t, rel=1e-4)


@pytest.mark.parametrize("n_train", [12, 200])  # the bank as one table (12 <= B * J rows read) or the rows read
def test_crcd_relation_cosines_are_exact_on_zero_and_short_relations(n_train):
    """Against the reference's direct computation of the relation vectors, in float64: zero relations (the bank
    row is the anchor's own row, or holds the same vector) have the direction of the all-ones vector exactly,
    a close-by row (|w - A| ~ 1e-4) loses no precision, and the gradient is finite and as precise as float32."""
    from brcd.distill.crcd import RELATION_OFFSET, relation_cosines

    torch.manual_seed(7)
    batch_size, count, dim = 6, 9, 16
    memory = torch.nn.functional.normalize(torch.randn(n_train, dim), dim=1)
    memory[n_train - 1] = memory[3]  # another position holding anchor 3's vector
    memory[n_train - 2] = torch.nn.functional.normalize(memory[2] + 1e-4 * torch.randn(dim), dim=0)  # close by
    anchors = torch.arange(batch_size)  # the batch's positions, all anchors
    negatives = torch.randint(0, batch_size, (batch_size, count - 3))  # negatives that are anchors' rows
    negatives[:, :2] = torch.tensor([n_train - 1, n_train - 2])
    contrast = torch.cat([anchors[:, None], negatives, torch.randint(0, n_train, (batch_size, 2))], dim=1)
    sample = torch.nn.functional.normalize(torch.randn(batch_size, dim), dim=1).requires_grad_(True)
    out = relation_cosines(memory, contrast, sample, anchors)

    m64, v64 = memory.double(), sample.detach().double().requires_grad_(True)
    w_rel = m64[contrast][:, None] - m64[anchors][None, :, None] + RELATION_OFFSET  # (B, A, J, D)
    v_rel = v64[:, None] - m64[anchors][None] + RELATION_OFFSET  # (B, A, D)
    expected = torch.einsum("bajd,bad->baj", torch.nn.functional.normalize(w_rel, dim=-1),
                            torch.nn.functional.normalize(v_rel, dim=-1))
    zero = (memory[contrast][:, None] == memory[anchors][None, :, None]).all(-1)  # (B, A, J)
    assert zero.sum() > batch_size * 3  # self pairs, negatives hitting anchors, the copied row
    all_ones = v_rel.sum(-1) / (math.sqrt(dim) * v_rel.norm(dim=-1))  # cos(offset * ones, v_rel)
    # exact up to the float32 rounding of the result
    assert torch.allclose(out.double()[zero], all_ones[:, :, None].expand_as(zero)[zero].detach(), rtol=0, atol=1e-7)
    assert (out.double() - expected).abs().max() < 2e-7
    weights = torch.randn(out.shape)
    (out * weights).sum().backward()
    (expected * weights.double()).sum().backward()
    assert torch.isfinite(sample.grad).all()
    assert (sample.grad.double() - v64.grad).abs().max() < 1e-6 * v64.grad.abs().max()


# ---------------------------------------------------------------- packd by hand


def hand_sinkhorn(cost, eps, iterations=5000):
    """Plain scaling iterations: plan with row sums 1/n and column sums 1/m."""
    n, m = len(cost), len(cost[0])
    kernel = [[math.exp(-c / eps) for c in row] for row in cost]
    u, v = [1.0] * n, [1.0] * m
    for _ in range(iterations):
        u = [(1 / n) / sum(kernel[i][j] * v[j] for j in range(m)) for i in range(n)]
        v = [(1 / m) / sum(kernel[i][j] * u[i] for i in range(n)) for j in range(m)]
    return [[u[i] * kernel[i][j] * v[j] for j in range(m)] for i in range(n)]


def unit(x):
    norm = math.sqrt(sum(a * a for a in x))
    return [a / norm for a in x]


def dot(x, y):
    return sum(a * b for a, b in zip(x, y))


def hand_packd(s_views, t_views, seen_codes, positions, negatives, bank, pos_k, tau, eps):
    """PACKD as the module docstring states it, with plain loops (training step, bank warm-up)."""
    seen = dict(seen_codes)
    bank = {p: list(row) for p, row in bank.items()}
    for b, p in enumerate(positions):  # the step caches view-1 teacher codes and overwrites the bank first
        seen[p] = t_views[0][b]
        bank[p] = unit(t_views[0][b])
    total = 0.0
    for b, p in enumerate(positions):
        anchor = t_views[0][b]
        ranked = sorted((sum(x != y for x, y in zip(anchor, code)), q) for q, code in seen.items() if q != p)
        partners = [q for _, q in ranked[:pos_k]]
        students = [unit(s[b]) for s in s_views]
        teachers = [unit(t[b]) for t in t_views] + [unit(seen[q]) for q in partners]
        cost = [[sum((x - y) ** 2 for x, y in zip(a, c)) for c in teachers] for a in students]
        plan = hand_sinkhorn(cost, eps)
        positive = sum(plan[i][j] * dot(a, c) for i, a in enumerate(students) for j, c in enumerate(teachers)) / tau
        terms = [math.exp(dot(a, bank[q]) / tau) for a in students for q in [p] + negatives[b]]
        total += math.log(math.exp(positive) + sum(terms)) - positive
    return total / len(positions)


def packd_case(monkeypatch, options):
    import brcd.distill.packd as packd_module

    bits, n_train = 4, 8
    positions = [1, 4]
    negatives = [[0, 5, 4], [7, 1, 2]]  # 4 and 1 are in the batch: their bank rows were just overwritten
    monkeypatch.setattr(packd_module, "sample_negatives", lambda *args: torch.tensor(negatives))
    s_views = [[[0.9, -0.2, 0.4, 0.1], [-0.3, 0.8, -0.5, 0.6]], [[0.7, 0.1, 0.6, -0.2], [-0.6, 0.5, -0.1, 0.9]]]
    t_views = [[[1, -1, 1, 1], [-1, 1, -1, 1]], [[1, 1, 1, 1], [-1, 1, 1, 1]]]
    # 7 would be anchor 1's exact twin, but it has not been seen yet: never a partner
    seen_codes = {0: [1, -1, 1, -1], 2: [-1, 1, -1, -1], 3: [1, 1, -1, 1], 5: [-1, -1, -1, 1], 6: [1, -1, -1, 1]}
    loss_fn = create_distill_loss("packd", bits, n_train, {"packd": {**options, "sinkhorn_iters": 3000,
                                                                      "sinkhorn_tol": 0.0}})
    with torch.no_grad():
        loss_fn.embed_s.weight.copy_(torch.eye(bits))
        loss_fn.embed_s.bias.zero_()
        for q, code in seen_codes.items():
            loss_fn.teacher_feats[q] = torch.tensor(code, dtype=torch.float32)
            loss_fn.seen[q] = True
        loss_fn.teacher_feats[7] = torch.tensor(t_views[0][0], dtype=torch.float32)
    bank = {q: row.tolist() for q, row in enumerate(loss_fn.memory_t.memory)}
    s = [torch.tensor(v, requires_grad=True) for v in s_views]
    t = [torch.tensor(v, dtype=torch.float32) for v in t_views]
    batch = KDBatch(index=torch.tensor(positions), s_logits=tuple(s), s_codes=tuple(s), t_logits=tuple(t),
                    t_codes=tuple(t))
    return loss_fn, batch, (s_views, t_views, seen_codes, positions, negatives, bank)


def test_packd_equals_the_hand_computation_with_two_views_and_neighbour_positives(monkeypatch):
    loss_fn, batch, case = packd_case(monkeypatch, {"views": "both", "pos_k": 2})
    expected = hand_packd(*case, pos_k=2, tau=0.07, eps=0.1)
    out = loss_fn(batch)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-4)
    assert out["positives"].item() == 4  # two views + two neighbours per anchor
    out["loss"].backward()
    assert all(torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0 for x in batch.s_codes)


def test_packd_default_is_the_reference_single_positive_infonce(monkeypatch):
    loss_fn, batch, case = packd_case(monkeypatch, {})
    s_views, t_views, _, positions, negatives, bank = case
    expected = 0.0
    for b, p in enumerate(positions):
        s, t = unit(s_views[0][b]), unit(t_views[0][b])
        rows = {**bank, **{q: unit(t_views[0][k]) for k, q in enumerate(positions)}}
        positive = dot(s, t) / 0.07
        # the anchor's own (just overwritten) bank entry is in the denominator, as in the reference
        denominator = math.exp(positive) + sum(math.exp(dot(s, rows[q]) / 0.07) for q in [p] + negatives[b])
        expected += -math.log(math.exp(positive) / denominator) / len(positions)
    out = loss_fn(batch)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["positives"].item() == 1
    # the general hand formula with one view and no partner is this InfoNCE
    assert expected == pytest.approx(hand_packd([s_views[0]], [t_views[0]], *case[2:], pos_k=0, tau=0.07, eps=0.1),
                                     rel=1e-9)


def test_packd_neighbours_skip_unseen_images_and_the_anchor(monkeypatch):
    loss_fn, batch, _ = packd_case(monkeypatch, {"pos_k": 3})
    loss_fn.train()
    loss_fn.remember(batch.index, batch.t_codes[0], torch.nn.functional.normalize(batch.t_codes[0], dim=1))
    partners, valid = loss_fn.neighbours(batch.index, batch.t_codes[0])
    assert valid.all()
    # anchor at 1 (+ - + +): Hamming 1 to 0 and 6, 2 to 3 and 5 (ties go to the lower position);
    # 7, its exact twin, has not been seen. Anchor at 4 (- + - +): 1 to 2, 3 and 5.
    assert partners.tolist() == [[0, 6, 3], [2, 3, 5]]


def test_sinkhorn_plan_has_the_uniform_marginals_and_ignores_missing_columns():
    from brcd.distill.packd import sinkhorn_plan

    torch.manual_seed(6)
    cost = torch.rand(3, 2, 5) * 4
    valid = torch.tensor([[True] * 5, [True, True, True, False, False], [True, True, False, True, False]])
    plan = sinkhorn_plan(cost, valid, 0.1, 2000, 0.0)
    assert torch.allclose(plan.sum(-1), torch.full((3, 2), 0.5), atol=1e-4)
    counts = valid.sum(-1, keepdim=True).float()
    assert torch.allclose(plan.sum(-2), torch.where(valid, 1 / counts, torch.zeros(())), atol=1e-4)
    # cheaper pairs get more mass
    assert plan[0, 0, cost[0, 0].argmin()] > plan[0, 0, cost[0, 0].argmax()]


def test_options_are_typed_once_and_the_loss_reads_them_as_typed():
    """Whole numbers and numeric strings (as `--config` passes them) are read as their values by the
    one numeric rule; the loss gets ints and floats, never strings to re-parse."""
    loss = create_distill_loss("crd", BITS, N, {"crd": {"negatives": "7", "feat_dim": 16.0, "nce_t": "0.1"}})
    assert loss.options["negatives"] == 7 and type(loss.options["negatives"]) is int
    assert loss.options["feat_dim"] == 16 and type(loss.options["feat_dim"]) is int
    assert loss.options["nce_t"] == 0.1
    crcd = create_distill_loss("crcd", BITS, N, {"crcd": {"self_pairs": "false", "anchors": "4"}})
    assert crcd.options["self_pairs"] is False and crcd.options["anchors"] == 4


def test_every_method_declares_typed_settings():
    from brcd.options import Option

    for name in KD_LOSSES:
        cls = KD_LOSSES.get(name)
        assert all(isinstance(option, Option) and option.help for option in cls.settings.values()), name
        assert cls.defaults == {key: option.default for key, option in cls.settings.items()}, name
