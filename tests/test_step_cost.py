"""Issue 25, item 3: the cheaper steps of crd, crcd and sskd compute what the plain code computes.

Each optimised method is compared on a fixed batch with a plain reference written here (float64,
explicit tensors, the NCE and sampling as the reference code writes them, the student's head run once
per input): the loss value and the gradients with respect to the head's parameters and the loss's
embeddings agree to 1e-6 (relative to the loss, and to the largest entry of each gradient). The draws
are the same: sampling consumes the same random numbers and draws the same negatives. The timing
itself is benchmarks/step_cost.py's (run here on tiny settings; no test asserts a time).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brcd.checkpoint import build_head
from brcd.distill import KDBatch, create_distill_loss
from brcd.distill.base import contrastive_nce, sample_negatives, top_keys
from brcd.features import FeatureSource
from brcd.hashing import codes_from_logits, create_objective, hash_codes

torch.set_num_threads(1)

TOLERANCE = 1e-6
BITS, DIM = 16, 24


# ---------------------------------------------------------------- plain references


def reference_sample_negatives(positive, count, num_train):
    """The draw as it was written before issue 25: the ``count`` largest of uniform keys by topk."""
    keys = torch.rand(positive.shape[0], num_train - 1)
    draw = keys.topk(count, dim=1, sorted=False).indices
    return draw + (draw >= positive.unsqueeze(1)).long()


def reference_nce(similarity, temperature, num_train):
    """CRD's NCE loss (its ``NCESoftmax``-free ``ContrastLoss`` with Z = mean * num_train), in float64."""
    scores = torch.exp(similarity.double() / temperature)
    scores = scores / (scores.detach().mean() * num_train)
    m = scores.shape[1] - 1
    noise, eps = m / num_train, 1e-7
    log_d1 = torch.log(scores[:, 0] / (scores[:, 0] + noise + eps))
    log_d0 = torch.log(noise / (scores[:, 1:] + noise + eps))
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]


def reference_crd(loss_fn, batch, contrast):
    """crd on view 1's codes: each side's embedding against the other side's bank rows, copied out."""
    v_s = F.normalize(loss_fn.embed_s(batch.s_codes[0]).double(), dim=1)
    v_t = F.normalize(loss_fn.embed_t(batch.t_codes[0]).double(), dim=1)
    t, n = loss_fn.options["nce_t"], loss_fn.num_train
    sim_s = torch.einsum("bd,bkd->bk", v_s, loss_fn.memory_t.memory[contrast].double())
    sim_t = torch.einsum("bd,bkd->bk", v_t, loss_fn.memory_s.memory[contrast].double())
    return reference_nce(sim_s, t, n) + reference_nce(sim_t, t, n)


def reference_relations(memory, sample, anchors, contrast, offset=1e-6):
    """The relation cosines with explicit (B, A, J, D) relation vectors, as the reference code builds them."""
    memory = memory.double()
    anchor = memory[anchors]
    w_rel = memory[contrast][:, None] - anchor[None, :, None] + offset
    v_rel = sample[:, None] - anchor[None] + offset
    return torch.einsum("bajd,bad->baj", F.normalize(w_rel, dim=-1), F.normalize(v_rel, dim=-1))


def reference_crcd(loss_fn, batch, contrast, anchors):
    v_s = F.normalize(loss_fn.embed_s(batch.s_codes[0]).double(), dim=1)
    v_t = F.normalize(loss_fn.embed_t(batch.t_codes[0]).double(), dim=1)
    t, n = loss_fn.options["nce_t"], loss_fn.num_train
    rel_s = reference_relations(loss_fn.memory_t.memory, v_s, anchors, contrast).flatten(0, 1)
    rel_t = reference_relations(loss_fn.memory_s.memory, v_t, anchors, contrast).flatten(0, 1)
    return reference_nce(rel_s, t, n) + reference_nce(rel_t, t, n)


# ---------------------------------------------------------------- comparing a loss and its gradients


def agree(actual: float, expected: float) -> bool:
    return abs(actual - expected) <= TOLERANCE * abs(expected)


def assert_same_gradients(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name, grad in expected.items():
        scale = float(grad.abs().max())
        assert scale > 0, name
        error = float((actual[name].double() - grad.double()).abs().max())
        assert error <= TOLERANCE * scale, f"{name}: max error {error:.3g} vs max entry {scale:.3g}"


class Case:
    """A student head, a batch of B training positions with two views, and a teacher's codes."""

    def __init__(self, num_train: int, batch: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.num_train = num_train
        self.index = torch.randperm(num_train, generator=g)[:batch]
        self.features = torch.randn(2, batch, DIM, generator=g)
        self.rotations = torch.randn(batch, 4, DIM, generator=g)
        self.t_logits = torch.randn(2, batch, BITS, generator=g)
        torch.manual_seed(seed)
        self.head = build_head({"kind": "mlp", "in_dim": DIM, "bits": BITS, "hidden": 32})

    def batch(self, head) -> KDBatch:
        s1, s2 = head(self.features[0]), head(self.features[1])
        t1, t2 = self.t_logits
        return KDBatch(index=self.index, s_logits=(s1, s2), s_codes=(hash_codes(s1), hash_codes(s2)),
                       t_logits=(t1, t2), t_codes=(codes_from_logits(t1).float(), codes_from_logits(t2).float()))

    def run(self, loss_fn, forward) -> tuple[float, dict]:
        """Loss and gradients (head and embeddings) of ``forward(loss, batch)`` on copies of the head and loss."""
        head, loss_fn = copy.deepcopy(self.head), copy.deepcopy(loss_fn)
        loss = forward(loss_fn, self.batch(head))
        loss.backward()
        named = [*(("head." + n, p) for n, p in head.named_parameters()), *loss_fn.named_parameters()]
        return float(loss.detach()), {name: p.grad.clone() for name, p in named}


def fixed_draw(monkeypatch, case: Case, count: int):
    """The negatives every loss of this test draws: one draw, returned to every caller."""
    import brcd.distill.crd as crd_module

    torch.manual_seed(11)
    contrast = torch.cat([case.index[:, None], sample_negatives(case.index, count, case.num_train)], dim=1)
    monkeypatch.setattr(crd_module, "sample_negatives", lambda *args: contrast[:, 1:])  # a view: edits reach it
    return contrast


# ---------------------------------------------------------------- sampling


def test_negatives_are_the_reference_draw_and_leave_the_random_stream_where_it_did():
    positive = torch.tensor([3, 4999, 0, 1200] * 16)
    for seed in range(5):
        torch.manual_seed(seed)
        draw, after = sample_negatives(positive, 500, 5000), torch.rand(1)
        torch.manual_seed(seed)
        expected, expected_after = reference_sample_negatives(positive, 500, 5000), torch.rand(1)
        assert torch.equal(draw.sort(1).values, expected.sort(1).values)  # the same sets (only the order differs)
        assert torch.equal(after, expected_after)


@pytest.fixture(params=["kernels", "torch"])
def path(request, monkeypatch):
    """Both ways the losses compute on: the compiled kernels (CPU) and torch ops (other devices)."""
    import brcd.distill.base as base

    monkeypatch.setattr(base, "KERNELS", request.param == "kernels")
    return request.param


@pytest.mark.parametrize("levels", [7, 64, 2**24])  # many ties at the cut, some, (almost) none
def test_top_keys_selects_topk_s_set_also_with_ties(levels):
    torch.manual_seed(levels)
    for count in (1, 17, 120, 199, 200):
        keys = torch.randint(0, levels, (40, 200)).float() / levels
        expected = keys.topk(count, dim=1, sorted=False).indices
        assert torch.equal(top_keys(keys, count).sort(1).values, expected.sort(1).values)


def test_the_histogram_finds_the_cut_when_the_keys_are_not_uniform():
    """A row whose largest keys are not where uniform keys would put them is searched whole."""
    keys = torch.rand(6, 300) * 0.2  # all far below the expected quantile
    keys[0, :5] = 0.99
    for count in (3, 50, 299):
        assert torch.equal(top_keys(keys, count).sort(1).values,
                           keys.topk(count, dim=1, sorted=False).indices.sort(1).values)


# ---------------------------------------------------------------- the NCE and the bank products


@pytest.mark.parametrize("rows, columns", [(64, 501), (512, 501), (3, 1)])
def test_contrastive_nce_is_crd_s_nce_with_its_gradient(rows, columns):
    torch.manual_seed(rows)
    similarity = (torch.rand(rows, columns) * 2 - 1).requires_grad_(True)
    z = torch.tensor(-1.0)
    loss = contrastive_nce(similarity, 0.05, z, 5000)
    loss.backward()
    reference_input = similarity.detach().double().requires_grad_(True)
    expected = reference_nce(reference_input, 0.05, 5000)
    expected.backward()
    assert agree(float(loss.detach()), float(expected.detach()))
    assert float(z) == pytest.approx(float(torch.exp(similarity.detach() / 0.05).mean()) * 5000, rel=1e-6)
    assert_same_gradients({"similarity": similarity.grad}, {"similarity": reference_input.grad})
    again = contrastive_nce(similarity.detach(), 0.05, z, 5000)  # Z stays fixed after its first use
    assert float(again) == pytest.approx(float(loss.detach()), rel=1e-6)


# ---------------------------------------------------------------- crd and crcd against the references


@pytest.mark.parametrize("num_train", [300, 5000])  # a bank of fewer and of more rows than a step reads
def test_crd_loss_and_gradients_are_the_reference_s(monkeypatch, path, num_train):
    case = Case(num_train, 32)
    contrast = fixed_draw(monkeypatch, case, 200)
    torch.manual_seed(1)
    loss_fn = create_distill_loss("crd", BITS, num_train, {"crd": {"negatives": 200}})
    loss, grads = case.run(loss_fn, lambda fn, batch: fn(batch)["loss"])
    expected, expected_grads = case.run(loss_fn, lambda fn, batch: reference_crd(fn, batch, contrast))
    assert agree(loss, expected)
    assert_same_gradients(grads, expected_grads)


@pytest.mark.parametrize("num_train", [300, 5000])  # the bank as one table, or the rows read
@pytest.mark.parametrize("anchors", [4, "all"])
def test_crcd_loss_and_gradients_are_the_reference_s(monkeypatch, path, num_train, anchors):
    """With zero relations (a = b pairs, negatives at anchors' positions, a bank row holding an anchor's
    vector) and a short one (a row 1e-4 from an anchor's), whose float64 treatment the 1e-6 needs."""
    import brcd.distill.crcd as crcd_module

    case = Case(num_train, 16)
    contrast = fixed_draw(monkeypatch, case, 100)
    torch.manual_seed(2)
    loss_fn = create_distill_loss("crcd", BITS, num_train, {"crcd": {"negatives": 100, "anchors": anchors}})
    chosen = torch.arange(16) if anchors == "all" else torch.tensor([5, 0, 11, 3])
    monkeypatch.setattr(crcd_module.CRCD, "choose_anchors", lambda self, size, device: chosen)
    anchor_positions = case.index[chosen]
    with torch.no_grad():
        for memory in (loss_fn.memory_s.memory, loss_fn.memory_t.memory):
            memory[contrast[0, 5]] = memory[anchor_positions[1]]  # a bank row holding an anchor's vector
            memory[contrast[1, 7]] = F.normalize(memory[anchor_positions[2]] + 1e-4 * torch.randn(128), dim=0)
            memory[contrast[2, 9]] = memory[anchor_positions[0]]
    contrast[3, 4] = anchor_positions[3]  # a negative drawn at an anchor's position
    loss, grads = case.run(loss_fn, lambda fn, batch: fn(batch)["loss"])
    expected, expected_grads = case.run(loss_fn, lambda fn, batch: reference_crcd(fn, batch, contrast,
                                                                                   anchor_positions))
    assert agree(loss, expected)
    assert_same_gradients(grads, expected_grads)


def test_crd_and_crcd_steps_are_deterministic():
    """The same run gives byte-identical results: the compiled kernels' sums are in a fixed order."""
    def train(name):
        case = Case(400, 32)
        torch.manual_seed(3)
        loss_fn = create_distill_loss(name, BITS, 400, {name: {"negatives": 50}})
        params = [*case.head.parameters(), *loss_fn.parameters()]
        optimizer = torch.optim.SGD(params, lr=0.1)
        for _ in range(3):
            optimizer.zero_grad()
            loss_fn(case.batch(case.head))["loss"].backward()
            optimizer.step()
        return [p.detach().clone() for p in params] + [b.clone() for b in loss_fn.buffers()]

    for name in ("crd", "crcd", "packd"):
        first, second = train(name), train(name)
        assert all(torch.equal(a, b) for a, b in zip(first, second)), name


# ---------------------------------------------------------------- sskd: the whole step


class Source(FeatureSource):
    """Stored views and rotations of a few training images (the bank's interface)."""

    num_views = 3

    def __init__(self, num_train: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self._views = torch.randn(num_train, self.num_views, DIM, generator=g)
        self._rotations = torch.randn(num_train, 4, DIM, generator=g)
        self.feature_dim = DIM

    def views(self, pos, views):
        return self._views[torch.as_tensor(pos), torch.as_tensor(views)]

    def rotations(self, pos):
        return self._rotations[torch.as_tensor(pos)]


class Teacher:
    def __init__(self, num_train: int):
        g = torch.Generator().manual_seed(5)
        self._views = torch.randn(num_train, Source.num_views, BITS, generator=g)
        self._rotations = torch.randn(num_train, 4, BITS, generator=g)

    def views(self, pos, views):
        return self._views[torch.as_tensor(pos), torch.as_tensor(views)]

    def rotations(self, pos):
        return self._rotations[torch.as_tensor(pos)]


def reference_student_step(head, objective, kd_loss, source, teacher, lam):
    """The student's step with sskd as it was written before issue 25 (each view in a head pass of its own)."""

    def step(pos, v1, v2):
        s1, s2 = head(source.views(pos, v1)), head(source.views(pos, v2))
        t1, t2 = teacher.views(pos, v1), teacher.views(pos, v2)
        batch = KDBatch(index=torch.as_tensor(pos), s_logits=(s1, s2),
                        s_codes=(objective.codes(s1), objective.codes(s2)), t_logits=(t1, t2),
                        t_codes=(codes_from_logits(t1).float(), codes_from_logits(t2).float()),
                        s_rot_logits=head(source.rotations(pos).flatten(0, 1)).view(len(pos), 4, -1),
                        t_rot_logits=teacher.rotations(pos))
        return {"loss": objective(s1, s2)["loss"] + lam * kd_loss(batch)["loss"]}

    return step


@pytest.mark.parametrize("ss_ratio", [1.0, 0.75])
def test_sskd_step_and_gradients_are_the_reference_s(ss_ratio):
    from brcd.distill.train_student import student_step

    num_train = 40
    source, teacher = Source(num_train), Teacher(num_train)
    pos, v1, v2 = np.arange(3, 35), np.arange(32) % 3, (np.arange(32) + 1) % 3
    results = []
    for make in (student_step, reference_student_step):
        torch.manual_seed(4)
        head = build_head({"kind": "mlp", "in_dim": DIM, "bits": BITS, "hidden": 32})
        objective = create_objective("cibhash", BITS)
        kd = create_distill_loss("sskd", BITS, num_train, {"sskd": {"ss_ratio": ss_ratio}})
        loss = make(head, objective, kd, source, teacher, 20.0)(pos, v1, v2)["loss"]
        loss.backward()
        results.append((float(loss.detach()), {name: p.grad.clone() for name, p in head.named_parameters()}))
    (loss, grads), (expected, expected_grads) = results
    assert agree(loss, expected)
    assert_same_gradients(grads, expected_grads)


# ---------------------------------------------------------------- the benchmark


def test_step_cost_benchmark_runs_every_method_on_tiny_settings(capsys):
    from tests.conftest import load_benchmark

    step_cost = load_benchmark("step_cost")
    from brcd.distill import KD_LOSSES

    step_cost.main(["--bits", "16", "--train-size", "120", "--batch-size", "16", "--hidden", "32", "--repeats", "2"])
    output = capsys.readouterr().out
    assert "single-thread fp32 GEMM" in output and "GFLOP/s" in output
    table = [line.split() for line in output.splitlines()
             if line.split()[:1] and line.split()[0] in KD_LOSSES.names()]
    rows = {row[0]: row for row in table if row[1] != "costs"}  # the table, not the lines on methods above 2x
    assert set(rows) == set(KD_LOSSES.names())
    assert rows["kd"][2] == "1.00"  # the baseline's ratio to itself
    assert all(float(row[1]) > 0 and len(row) == 8 for row in rows.values())
    for row in table:  # a method above 2x kd steps is named with the part of its step that keeps it there
        if row[1] == "costs":
            assert float(rows[row[0]][2]) > 2 and "most of the excess is" in " ".join(row)
