"""Which CPU kernel computes a hash head's matrix products (``train.<role>.matmul``).

A head's cost on a CPU is its matrix products: two per training step (the
forward pass and the weight gradient of the wide first layer) and one per
image at every validation, where the head encodes the whole database. Torch
runs them with its BLAS (Intel MKL in the PyTorch wheels). MKL picks its
AVX-512 kernels on Intel CPUs only; on AMD CPUs with AVX-512 it runs its AVX2
path, half of what the core can do. oneDNN, which torch also ships (it runs
torch's convolutions), selects its kernels by instruction set alone, so it
reaches the core's AVX-512 rate on both (``benchmarks/matmul_kernels.py``
measures both on the machine at hand).

Both kernels compute in fp32; they sum in different orders, so a run with one
is not byte for byte a run with the other (each is deterministic on its own:
the same run on the same machine gives the same bytes). That is why the kernel
is a setting of the config, part of its cells' config hash when not the
default: a results folder never mixes runs of the two.

- ``blas``: ``torch.nn.functional.linear`` (the default; every grid before this
  setting ran it).
- ``onednn``: oneDNN's fp32 matmul (``torch.ops.mkldnn._linear_pointwise``) for
  the forward pass, the input gradient and the weight gradient. On tensors it
  does not cover (not fp32, or not on the CPU: a GPU runs cuBLAS either way),
  or in a torch built without oneDNN, it is ``blas``'s computation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from brcd.registry import Registry

#: kernel name -> ``linear(x, weight, bias) -> x @ weight.T + bias``
LINEAR_KERNELS: Registry = Registry("matmul kernel", config_key="train.<role>.matmul")

#: what a head runs when its spec names no kernel (every checkpoint written before the setting)
DEFAULT_KERNEL = "blas"

_HAS_ONEDNN = torch.backends.mkldnn.is_available()


@LINEAR_KERNELS.register("blas")
def blas_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x, weight, bias)


def _onednn_mm(a: torch.Tensor, b_t: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b_t.T + bias`` by oneDNN, ``a`` of shape (..., in); ``b_t`` may be a strided view (its
    transpose costs no copy), ``a`` is made contiguous by the op (in the backward pass a copy of the
    small operand: the gradient)."""
    return torch.ops.mkldnn._linear_pointwise(a, b_t, bias, "none", [], "")


class _OneDnnLinear(torch.autograd.Function):
    """y = x Wᵀ + b with oneDNN's kernels forward and backward (x of shape (..., in))."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_mm(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable  # its products have no graph: a second order raises
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_flat = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # dL/dx = g W
            grad_x = _onednn_mm(grad_flat, weight.t()).reshape(x.shape)
        if ctx.needs_input_grad[1]:  # dL/dW = gᵀ x
            grad_weight = _onednn_mm(grad_flat.t(), x.reshape(-1, x.shape[-1]).t())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_flat.sum(0)
        return grad_x, grad_weight, grad_bias


@LINEAR_KERNELS.register("onednn")
def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if not _HAS_ONEDNN or x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return F.linear(x, weight, bias)
    return _OneDnnLinear.apply(x, weight, bias)


class KernelLinear(nn.Linear):
    """``nn.Linear`` (same parameters, initialisation and state-dict keys) whose product runs on a
    named kernel of :data:`LINEAR_KERNELS`."""

    def __init__(self, in_features: int, out_features: int, kernel: str):
        super().__init__(in_features, out_features)
        self.kernel = kernel
        self._linear = LINEAR_KERNELS.get(kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel={self.kernel}"


def linear_layer(kernel: str = DEFAULT_KERNEL):
    """The layer class a head of ``kernel`` builds: plain ``nn.Linear`` for the default (so heads of
    every earlier run are the same modules), else a :class:`KernelLinear` on that kernel."""
    LINEAR_KERNELS.get(kernel)  # an unknown name fails here, naming the config key
    if kernel == DEFAULT_KERNEL:
        return nn.Linear
    return lambda in_features, out_features: KernelLinear(in_features, out_features, kernel)


def gemm_rate(kernel: str = DEFAULT_KERNEL, size: int = 1024, repeats: int = 5, clock=None) -> float:
    """GFLOP/s of one thread's fp32 ``size``-square matrix product on ``kernel``: the best of ``repeats``
    rounds of 4 products, timed by ``clock`` (default the thread's CPU time, so that other processes on
    a busy machine do not count; pass ``time.perf_counter`` to compare with wall-clock times). What
    the benchmarks hold a training step's rate against; on an AMD CPU with AVX-512 ``onednn``'s is
    about twice ``blas``'s (``benchmarks/matmul_kernels.py``)."""
    import time

    clock = clock or time.thread_time
    linear = LINEAR_KERNELS.get(kernel)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        with torch.no_grad():
            linear(a, b, None)  # warm-up (oneDNN builds its kernel on first use)
            best = float("inf")
            for _ in range(repeats):
                started = clock()
                for _ in range(4):
                    linear(a, b, None)
                best = min(best, (clock() - started) / 4)
    finally:
        torch.set_num_threads(threads)
    return 2.0 * size**3 / best / 1e9
