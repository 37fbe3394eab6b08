"""Sign with straight-through gradient, and the hashing objectives."""
import math

import pytest
import torch

from brcd.errors import ConfigError
from brcd.hashing import OBJECTIVES, codes_from_logits, create_objective, hash_codes

torch.set_num_threads(1)


def test_hash_codes_forward_is_sign_with_zero_to_plus_one():
    u = torch.tensor([[-3.0, -1e-3, 0.0, 1e-3, 2.0]])
    assert hash_codes(u).tolist() == [[-1.0, -1.0, 1.0, 1.0, 1.0]]
    assert codes_from_logits(u).tolist() == [[-1, -1, 1, 1, 1]]
    assert codes_from_logits(u).dtype == torch.int8


def test_hash_codes_gradient_is_identity_with_respect_to_p():
    u = torch.tensor([[-2.0, 0.0, 0.5, 3.0]], requires_grad=True)
    weights = torch.tensor([[1.0, -2.0, 3.0, 0.5]])
    (hash_codes(u) * weights).sum().backward()
    p = torch.sigmoid(u.detach())
    # db/dp = 1, so db/du = dp/du = p (1 - p)
    assert torch.allclose(u.grad, weights * p * (1 - p))


def test_codes_from_logits_agree_with_hash_codes():
    u = torch.randn(50, 16)
    assert torch.equal(codes_from_logits(u).float(), hash_codes(u))


def _reference_cibhash(u1, u2, tau=0.3, beta=0.001):
    """SPEC §3 written out loop by loop, in float64."""
    u1, u2 = u1.double(), u2.double()
    b = torch.cat([torch.sign(torch.sigmoid(u1) - 0.5), torch.sign(torch.sigmoid(u2) - 0.5)])
    n = b.shape[0]
    batch = n // 2
    total = 0.0
    for a in range(n):
        partner = (a + batch) % n
        sims = [float(b[a] @ b[c]) / (b[a].norm() * b[c].norm()) / tau for c in range(n)]
        denominator = sum(math.exp(sims[c]) for c in range(n) if c != a)
        total += -math.log(math.exp(sims[partner]) / denominator)
    ntxent = total / n

    def kl(p, q):
        return sum(
            float(p[i, l] * math.log(p[i, l] / q[i, l]) + (1 - p[i, l]) * math.log((1 - p[i, l]) / (1 - q[i, l])))
            for i in range(p.shape[0])
            for l in range(p.shape[1])
        ) / p.shape[0]

    p1, p2 = torch.sigmoid(u1), torch.sigmoid(u2)
    kl_term = 0.5 * (kl(p1, p2) + kl(p2, p1))
    return ntxent + beta * kl_term, ntxent, kl_term


def test_cibhash_matches_hand_computation():
    torch.manual_seed(0)
    u1, u2 = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    out = create_objective("cibhash", bits=8)(u1, u2)
    loss, ntxent, kl = _reference_cibhash(u1, u2)
    assert out["ntxent"].item() == pytest.approx(ntxent, rel=1e-9)
    assert out["kl"].item() == pytest.approx(kl, rel=1e-9)
    assert out["loss"].item() == pytest.approx(loss, rel=1e-9)
    settings = create_objective("cibhash", bits=8, tau=0.5, beta=0.1)(u1, u2)
    assert settings["loss"].item() == pytest.approx(_reference_cibhash(u1, u2, 0.5, 0.1)[0], rel=1e-9)


def test_cibhash_kl_stops_the_gradient_of_its_target():
    u1 = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    u2 = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    create_objective("cibhash", bits=16)(u1, u2)["kl"].backward()
    # d KL(p1 || const q) / d u1 = p1 (1 - p1) (u1 - logit q); KL(p2 || sg p1) adds nothing.
    p1 = torch.sigmoid(u1.detach())
    expected = 0.5 * p1 * (1 - p1) * (u1.detach() - u2.detach()) / u1.shape[0]
    assert torch.allclose(u1.grad, expected)


@pytest.mark.parametrize("name", ["cibhash", "greedyhash"])
def test_objectives_are_finite_and_train_the_logits(name):
    torch.manual_seed(1)
    u1 = (torch.randn(8, 32) * 50).requires_grad_()  # saturated probabilities
    u2 = (torch.randn(8, 32) * 50).requires_grad_()
    out = create_objective(name, bits=32)(u1, u2)
    assert set(out) >= {"loss", "ntxent"} and all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert torch.isfinite(u1.grad).all() and torch.isfinite(u2.grad).all()


@pytest.mark.parametrize("name", ["cibhash", "greedyhash"])
def test_objective_pulls_two_views_together(name):
    """A few steps on a tiny problem lower the loss: the interface trains a head."""
    torch.manual_seed(2)
    features = torch.randn(16, 20)
    head = torch.nn.Linear(20, 16)
    objective = create_objective(name, bits=16)
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-2)

    def loss():
        return objective(head(features + 0.1 * torch.randn_like(features)), head(features + 0.1 * torch.randn_like(features)))["loss"]

    torch.manual_seed(3)
    before = torch.stack([loss() for _ in range(5)]).mean().item()
    for _ in range(60):
        optimiser.zero_grad()
        loss().backward()
        optimiser.step()
    torch.manual_seed(3)
    after = torch.stack([loss() for _ in range(5)]).mean().item()
    assert after < before


def test_greedyhash_penalty_and_codes():
    objective = create_objective("greedyhash", bits=8, alpha=2.0)
    u = torch.tensor([[0.0, 2.0, -0.5, 1.0, -1.0, 3.0, -2.0, 0.25]])
    out = objective(u, u)
    assert out["penalty"].item() == pytest.approx(((u.abs() - 1).abs() ** 3).mean().item())
    assert objective.codes(u).tolist() == [[1, 1, -1, 1, -1, 1, -1, 1]]
    v = u.clone().requires_grad_()
    objective.codes(v).sum().backward()
    assert torch.equal(v.grad, torch.ones_like(v))  # GreedyHash's own straight-through: identity in u


def test_objective_registry_errors():
    assert {"cibhash", "greedyhash"} <= set(OBJECTIVES.names())
    with pytest.raises(ConfigError, match="unknown hashing objective 'bihalf'.*cibhash"):
        create_objective("bihalf", bits=16)
    with pytest.raises(ConfigError, match="temperature"):
        create_objective("cibhash", bits=16, temperature=0.2)
    with pytest.raises(ConfigError, match="multiple of 8"):
        create_objective("cibhash", bits=10)


def test_objectives_declare_typed_settings():
    """Each objective's settings are declared with their types and ranges (brcd.options), and checked
    by name: no objective re-parses or re-checks a value itself."""
    from brcd.options import Option

    for name in OBJECTIVES:
        declared = OBJECTIVES.get(name).settings
        assert declared and all(isinstance(option, Option) and option.help for option in declared.values()), name
    with pytest.raises(ConfigError, match=r"`cibhash.tau` must be a finite number > 0; got 0"):
        create_objective("cibhash", bits=16, tau=0)
    with pytest.raises(ConfigError, match=r"`greedyhash.alpha` must be a finite number >= 0; got 'abc'"):
        create_objective("greedyhash", bits=16, alpha="abc")
    assert create_objective("greedyhash", bits=16, alpha="2").alpha == 2
