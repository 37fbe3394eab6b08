"""The heads' matmul kernels against each other, on this machine: ``train.<role>.matmul``.

A student's cost on a CPU is mostly its head's matrix products: in each
training step the forward pass and the weight gradient of the wide first layer
(two views of a batch: 2 x batch rows), and at each validation the encoding of
the whole database. This script times exactly those, one thread, for every
kernel of ``brcd.models.linear.LINEAR_KERNELS``, in the thread's CPU time (the
best of ``--repeats`` rounds, the kernels taking turns), and prints

- the GEMM rate of a 1024-square product per kernel (GFLOP/s);
- per kernel: milliseconds of the head's forward and backward pass on a
  training batch, and of encoding ``--database`` rows in chunks of 4,096 as
  validation does, each with its ratio to ``blas`` (torch's default, the
  baseline, measured in the same process);
- the largest difference of a head's logits between the kernels, against the
  logits' scale (both compute in fp32 and sum in different orders).

Defaults are the study's student (EfficientNet-Lite0's 1,280 features -> 256
-> 16 bits, batch 64, a 60,000-image database):

    .venv/bin/python benchmarks/matmul_kernels.py

Times depend on the machine (MKL runs AVX-512 kernels on Intel CPUs only, so
on an AMD CPU ``onednn`` is about twice ``blas``; on an Intel one they are
close): name the CPU with the numbers.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brcd.models import create_head  # noqa: E402
from brcd.models.linear import DEFAULT_KERNEL, LINEAR_KERNELS, gemm_rate  # noqa: E402

ENCODE_CHUNK = 4096  # brcd.train.encode_features' chunk


def seconds(fn: Callable[[], object], calls: int) -> float:
    """CPU seconds of one ``fn()``, the mean of ``calls`` calls."""
    started = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - started) / calls


def head_products(kernel: str, args, batch: torch.Tensor, database: torch.Tensor) -> dict[str, Callable]:
    """A study student's head on ``kernel``: its training step's pass, and a validation's encoding."""
    torch.manual_seed(0)
    head = create_head("mlp", args.in_dim, args.bits, args.hidden, matmul=kernel)
    weights = torch.linspace(-1, 1, args.bits)

    def step():
        head.zero_grad(set_to_none=True)
        (head(batch) * weights).sum().backward()

    @torch.no_grad()
    def encode():
        for start in range(0, len(database), ENCODE_CHUNK):
            head(database[start:start + ENCODE_CHUNK])

    return {"step": step, "encode": encode}


def best_milliseconds(products: dict[str, dict[str, Callable]], repeats: int) -> dict[str, dict[str, float]]:
    """Per kernel and product, the best of ``repeats`` rounds (50 steps, or one encoding, a round); the
    kernels take turns in every round, so that a change of the machine's state hits them alike."""
    calls = {"step": 50, "encode": 1}
    for runs in products.values():  # warm-up: oneDNN builds its kernels on first use
        for fn in runs.values():
            fn()
    best = {kernel: {name: float("inf") for name in runs} for kernel, runs in products.items()}
    for _ in range(repeats):
        for kernel, runs in products.items():
            for name, fn in runs.items():
                best[kernel][name] = min(best[kernel][name], seconds(fn, calls[name]) * 1e3)
    return best


def logit_difference(args, database: torch.Tensor) -> tuple[float, float]:
    """(largest |difference| of the logits of every kernel against blas's, their largest |value|)."""
    rows = database[:ENCODE_CHUNK]
    logits = {}
    for kernel in LINEAR_KERNELS:
        torch.manual_seed(0)
        with torch.no_grad():
            logits[kernel] = create_head("mlp", args.in_dim, args.bits, args.hidden, matmul=kernel)(rows)
    base = logits[DEFAULT_KERNEL]
    return max(float((x - base).abs().max()) for x in logits.values()), float(base.abs().max())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in-dim", type=int, default=1280, help="feature width (Lite0's 1,280)")
    parser.add_argument("--hidden", type=int, default=256, help="the head's hidden width (the study's 256)")
    parser.add_argument("--bits", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (two views each)")
    parser.add_argument("--database", type=int, default=60000, help="rows a validation encodes")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per measurement (the best counts)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(2 * args.batch_size, args.in_dim, generator=generator)
    database = torch.randn(args.database, args.in_dim, generator=generator)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, 1 thread")
    print(f"head {args.in_dim} -> {args.hidden} -> {args.bits}: a step's forward and backward pass on "
          f"{len(batch)} rows; a validation's encoding of {args.database} rows")
    print(f"{'kernel':<8} {'GEMM GFLOP/s':>12} {'step ms':>8} {'x blas':>7} {'encode ms':>10} {'x blas':>7}")
    rates = {kernel: gemm_rate(kernel) for kernel in LINEAR_KERNELS}
    times = best_milliseconds({kernel: head_products(kernel, args, batch, database) for kernel in LINEAR_KERNELS},
                              args.repeats)
    base = times[DEFAULT_KERNEL]
    for kernel, t in times.items():
        print(f"{kernel:<8} {rates[kernel]:12.1f} {t['step']:8.3f} {t['step'] / base['step']:7.2f} "
              f"{t['encode']:10.1f} {t['encode'] / base['encode']:7.2f}")
    difference, scale = logit_difference(args, database)
    print(f"largest logit difference from {DEFAULT_KERNEL}: {difference:.2e} (largest logit {scale:.2f}): "
          "fp32 both, summed in different orders")


if __name__ == "__main__":
    main()
