"""The heads' matmul kernels (``train.<role>.matmul``): what they compute, how a config names them,
and that runs of one never pass for runs of the other."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from brcd.cells import Cell
from brcd.checkpoint import build_head, head_spec, load_checkpoint, load_head
from brcd.checks import check_config
from brcd.codes import read_codes
from brcd.config import DEFAULT_MATMUL, REPO_ROOT, TrainSettings, validate_schema
from brcd.distill.train_student import train_student
from brcd.encode import encode_model
from brcd.errors import ConfigError
from brcd.models import create_head
from brcd.models.linear import DEFAULT_KERNEL, LINEAR_KERNELS, KernelLinear
from tests.conftest import build_teacher_grid

torch.set_num_threads(1)


def _linear_and_grads(kernel: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    x, weight, bias = (t.clone().requires_grad_(True) for t in (x, weight, bias))
    out = LINEAR_KERNELS.get(kernel)(x, weight, bias)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    return out.detach(), x.grad, weight.grad, bias.grad


@pytest.mark.parametrize("shape", [(64, 96), (4, 16, 96)])
def test_onednn_computes_the_linear_layer_and_its_gradients(shape):
    """Forward, input, weight and bias gradients of both kernels against float64: fp32 both."""
    generator = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(*s, generator=generator) for s in (shape, (40, 96), (40,)))
    exact = _linear_and_grads("blas", x.double(), weight.double(), bias.double())
    for kernel in ("blas", "onednn"):
        for got, want in zip(_linear_and_grads(kernel, x, weight, bias), exact):
            assert got.dtype == torch.float32 and got.shape == want.shape
            torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)


def test_onednn_has_no_second_order_gradient():
    """Its backward pass is not itself differentiable: asking for that raises instead of giving a silent
    zero (its gradient is not connected to the weight's graph)."""
    x, weight = torch.randn(8, 6), torch.randn(4, 6, requires_grad=True)
    (grad,) = torch.autograd.grad(LINEAR_KERNELS.get("onednn")(x, weight, None).square().sum(), weight,
                                  create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|not have been used in the graph"):
        torch.autograd.grad(grad.sum(), weight)


def test_onednn_is_deterministic_and_blas_elsewhere():
    generator = torch.Generator().manual_seed(1)
    x, weight, bias = torch.randn(128, 200, generator=generator), torch.randn(50, 200), torch.randn(50)
    runs = [_linear_and_grads("onednn", x, weight, bias) for _ in range(3)]
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(run, runs[0]))
    # float64 is not oneDNN's: the layer computes what blas does, bit for bit
    double = [t.double() for t in (x, weight, bias)]
    assert all(torch.equal(a, b) for a, b in zip(_linear_and_grads("onednn", *double),
                                                   _linear_and_grads("blas", *double)))


def test_heads_of_either_kernel_start_equal_and_the_default_is_plain_linear():
    torch.manual_seed(3)
    blas = create_head("mlp", in_dim=40, bits=16, hidden=24)
    torch.manual_seed(3)
    onednn = create_head("mlp", in_dim=40, bits=16, hidden=24, matmul="onednn")
    assert all(type(m) is nn.Linear for m in blas if isinstance(m, nn.Linear))
    assert [m.kernel for m in onednn if isinstance(m, KernelLinear)] == ["onednn", "onednn"]
    a, b = blas.state_dict(), onednn.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(8, 40)
    torch.testing.assert_close(onednn(x), blas(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match=r"train.<role>.matmul.*blas, onednn"):
        create_head("mlp", in_dim=40, bits=16, matmul="mkl")


def test_the_spec_names_the_kernel_only_when_not_the_default():
    """Checkpoints of the default stay what they were; a head of another kernel is rebuilt on it."""
    options = {"head": "mlp", "hidden": 24}
    assert head_spec(options, 16, 40) == head_spec(options, 16, 40, "blas") == {
        "kind": "mlp", "in_dim": 40, "bits": 16, "hidden": 24}
    spec = head_spec(options, 16, 40, "onednn")
    assert spec["matmul"] == "onednn"
    assert {m.kernel for m in build_head(spec) if isinstance(m, KernelLinear)} == {"onednn"}


def _config(**student):
    config = validate_schema(yaml.safe_load((REPO_ROOT / "config" / "test.yaml").read_text()))
    config["train"]["student"].update(student)
    return config


def test_the_kernel_is_in_the_student_cells_hash_unless_default():
    """A results folder never mixes the kernels' runs: `onednn` gives the students other cells;
    `blas` written out is the config as before (the committed reports' hashes do not move)."""
    teacher = Cell("synthetic", 16, "cibhash", "tteacher", 0)
    student = Cell("synthetic", 16, "cibhash", "tteacher", 0, "tstudent", "kd")
    before, blas, onednn = _config(), _config(matmul="blas"), _config(matmul="onednn")
    assert "matmul" not in TrainSettings.from_config(before, "student").hashed_fields()
    assert DEFAULT_MATMUL == DEFAULT_KERNEL  # brcd.config may not import brcd.models (the layers)
    assert student.config_hash(blas) == student.config_hash(before) != student.config_hash(onednn)
    assert teacher.config_hash(onednn) == teacher.config_hash(before)


def test_an_unknown_kernel_is_named_with_its_key():
    with pytest.raises(ConfigError, match=r"unknown matmul kernel 'mkl' in `train.student.matmul`; "
                                          r"allowed values: blas, onednn"):
        check_config(_config(matmul="mkl"))


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("matmul")
    config = _config(matmul="onednn", epochs=6, min_epochs=6, eval_every=3)
    config["train"]["teacher"].update(epochs=6, min_epochs=6, eval_every=3)
    build_teacher_grid(root, config)
    return config, root


def test_a_student_trained_on_onednn_is_encoded_on_it(grid, tmp_path):
    """The checkpoint names the kernel, so `brcd encode` computes the codes training wrote."""
    config, root = grid
    cell = Cell("synthetic", 16, "cibhash", "tteacher", 0, "tstudent", "kd")
    written = {selection: str(tmp_path / f"train_{selection}.parquet") for selection in ("sym", "asym")}
    train_student(config, cell, str(root / "split.parquet"), str(root / "teacher.pt"), str(tmp_path / "model.pt"),
                  None, student_bank=str(root / "tstudent"), teacher_bank=str(root / "tteacher"), codes=written)
    bundle = load_checkpoint(tmp_path / "model.pt")
    assert bundle["head"]["matmul"] == "onednn"
    assert {m.kernel for m in load_head(bundle, "sym") if isinstance(m, KernelLinear)} == {"onednn"}
    encoded = {selection: str(tmp_path / f"encode_{selection}.parquet") for selection in ("sym", "asym")}
    encode_model(config, cell, str(root / "split.parquet"), str(tmp_path / "model.pt"), encoded,
                 bank=str(root / "tstudent"))
    for selection in ("sym", "asym"):
        np.testing.assert_array_equal(read_codes(written[selection]).packed, read_codes(encoded[selection]).packed)
    teacher = load_checkpoint(root / "teacher.pt")
    assert "matmul" not in teacher["head"]  # the teachers' setting is their own (default here)
