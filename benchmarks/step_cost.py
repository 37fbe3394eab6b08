"""Per-step cost of every distillation method: one real student training step each, against ``kd``'s.

Issue 25 asks that no method's step cost more than 2x a ``kd`` step at the
same settings. For every registered method (``brcd.distill.KD_LOSSES``) this
script builds the student's training step as ``brcd train-student`` does --
the real head (``build_head(head_spec(...))``), the real objective
(``cibhash``), the loss from ``create_distill_loss``, the real step function
(``student_step``) over a feature bank (``BankSource``, its own reads) and a
``TeacherLogits`` over it, fused Adam over the head, the objective and the
loss's embeddings -- and runs it as ``brcd.train.fit`` does: forward,
backward, optimizer step, the terms read back as floats. The features are
synthetic (random float16 arrays as a bank stores them, held in memory), so
no grid has to be built first; a step's cost does not depend on their values.

Defaults are the study's (``config/study.yaml``): a 1280 -> 256 -> bits MLP
head (EfficientNet-Lite0's pooled features), batch 64, 5,000 training
images, 8 stored views, its ``brcd`` and ``kd_settings`` sections (``crcd``
with 8 anchors), 16 and 64 bits. One thread (a study job's share of a core).

Per method it prints the median milliseconds per step (CPU time of the one
thread that runs it, so that other processes on a busy machine do not count;
after warm-up, the methods measured in interleaved rounds so that a change in
the machine's state hits them alike), the ratio to ``kd``'s step, and a split
of the step:

- ``head``: the head's forward and backward pass alone on the rows the step
  feeds it (two views; ``sskd`` adds the four rotations of each image);
- ``kd loss``: the distillation loss's own forward and backward pass, on the
  same batch's logits as leaf tensors (embeddings and memory-bank updates
  included);
- ``rest``: the step minus both (L_hash, teacher-logit look-ups, Adam,
  autograd's bookkeeping);

and the head's FLOPs per step divided by the step's time, as a fraction of
this machine's single-thread fp32 GEMM rate on the heads' kernel (the
config's ``train.student.matmul``, or ``--matmul``), measured in the same run
(a square matrix product; printed first).

    .venv/bin/python benchmarks/step_cost.py                              # the study's settings (< 1 minute)
    .venv/bin/python benchmarks/step_cost.py --bits 64 --methods kd crcd crd sskd --repeats 60
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brcd.checkpoint import build_head, head_spec  # noqa: E402
from brcd.cluster import build_clusters  # noqa: E402
from brcd.config import REPO_ROOT, TrainSettings, load_config  # noqa: E402
from brcd.distill import KD_LOSSES, KDBatch, create_distill_loss  # noqa: E402
from brcd.distill.train_student import TeacherLogits, kd_settings, student_step  # noqa: E402
from brcd.features import NUM_ROTATIONS, BankSource  # noqa: E402
from brcd.hashing import create_objective  # noqa: E402
from brcd.models.linear import LINEAR_KERNELS, gemm_rate  # noqa: E402
from brcd.train import FusedAdam, _check_finite, sample_view_pairs  # noqa: E402

#: EfficientNet-Lite0's pooled feature width: the study student's head input
STUDENT_FEATURES = 1280
#: the teacher's logits are computed once up front and looked up per step (bank mode), so its width does not
#: enter a step's cost; a small teacher keeps the set-up short
TEACHER_FEATURES, TEACHER_HIDDEN = 64, 64
#: the study's feature bank stores 8 augmented views per training image
VIEWS = 8
#: the running thread's CPU time: a step runs on this one thread (one torch thread, the kernels inline), so
#: other processes on a busy machine do not count in it, as they would in wall-clock time
clock = time.thread_time
#: warm-up steps per method (allocator, caches, first-call dispatch); steps per interleaved round
WARMUP, ROUND = 3, 5


def synthetic_bank(num_train: int, dim: int, views: int, classes: int = 10, seed: int = 0) -> BankSource:
    """Random features in a bank held in memory (:meth:`brcd.features.BankSource.from_arrays`): float16
    arrays as a bank stores them, read by the bank's own methods as a student job reads them. Images
    have class structure (a prototype per class plus noise), so the teacher's codes cluster as real ones
    do; image i's clean row is row i."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_train) % classes
    clean = (torch.randn(classes, dim, generator=g)[labels] + 0.5 * torch.randn(num_train, dim, generator=g)).half()
    noise = torch.randn(num_train, views + NUM_ROTATIONS, dim, generator=g, dtype=torch.float16)
    return BankSource.from_arrays(clean.numpy(), np.arange(num_train), (clean[:, None] + 0.3 * noise[:, :views]).numpy(),
                                  noise[:, views:].numpy())


@dataclass
class Inputs:
    """What every method's step reads, built once: the student's source, the teacher and its clusters."""

    config: dict
    bits: int
    batch_size: int
    spec: dict
    source: BankSource
    teacher: TeacherLogits
    clusters: object

    @property
    def num_train(self) -> int:
        return self.source._views.shape[0]


def build_inputs(config: dict, bits: int, batch_size: int, train_size: int, hidden: int, matmul: str) -> Inputs:
    torch.manual_seed(0)
    source = synthetic_bank(train_size, STUDENT_FEATURES, VIEWS)
    t_source = synthetic_bank(train_size, TEACHER_FEATURES, VIEWS, seed=1)
    t_head = build_head(head_spec({"head": "mlp", "hidden": TEACHER_HIDDEN}, bits, TEACHER_FEATURES)).eval()
    t_head.requires_grad_(False)
    teacher = TeacherLogits.computed(t_head, t_source, train_size, rotations=True)
    with torch.no_grad():
        codes = torch.where(t_head(t_source.clean(np.arange(train_size))) >= 0, 1, -1).numpy().astype(np.int8)
    brcd = config.get("brcd", {})
    clusters = build_clusters(codes, np.arange(train_size), {**brcd, "clusters": min(brcd.get("clusters", 10),
                                                                                     train_size // 2)},
                              seed=0, nredo=1)
    spec = head_spec({"head": "mlp", "hidden": hidden}, bits, STUDENT_FEATURES, matmul)
    return Inputs(config, bits, min(batch_size, train_size), spec, source, teacher, clusters)


class MethodStep:
    """One method's student, optimiser and loss, stepping through epochs as ``fit`` does."""

    def __init__(self, name: str, inputs: Inputs):
        torch.manual_seed(0)
        self.name, self.inputs = name, inputs
        self.head = build_head(inputs.spec)
        self.objective = create_objective("cibhash", inputs.bits)
        self.kd = create_distill_loss(name, inputs.bits, inputs.num_train, kd_settings(inputs.config),
                                      inputs.clusters)
        self.step_fn = student_step(self.head, self.objective, self.kd, inputs.source, inputs.teacher, 1.0)
        params = [p for m in (self.head, self.objective, self.kd) for p in m.parameters() if p.requires_grad]
        settings = TrainSettings.from_config(inputs.config, "student")
        self.optimizer = FusedAdam(params, lr=settings.lr, weight_decay=settings.weight_decay)
        self.rng = np.random.default_rng([0, 7])
        self.order, self.cursor = None, 0

    def draw(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next batch of the epoch's permutation (a new permutation when it runs out), and its views."""
        n, b = self.inputs.num_train, self.inputs.batch_size
        if self.order is None or self.cursor + b > n:
            self.order, self.cursor = self.rng.permutation(n), 0
        pos = self.order[self.cursor:self.cursor + b]
        self.cursor += b
        return (pos, *sample_view_pairs(self.rng, len(pos), self.inputs.source.num_views))

    def step(self) -> float:
        """One training step as ``brcd.train.fit`` runs it; its seconds."""
        pos, v1, v2 = self.draw()
        started = clock()
        terms = self.step_fn(pos, v1, v2)
        _check_finite(terms, 1)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        self.optimizer.step()
        for value in terms.values():
            float(value.detach())
        return clock() - started

    def head_rows(self) -> int:
        """Rows the head encodes per step: two views, plus the four rotations of each image (``sskd``)."""
        return self.inputs.batch_size * (2 + NUM_ROTATIONS * self.kd.needs_rotations)

    def head_only(self) -> float:
        """Seconds of the head's forward and backward pass on :meth:`head_rows` rows of features."""
        pos, v1, v2 = self.draw()
        features = torch.cat([self.inputs.source.view_pairs(pos, v1, v2)]
                             + ([self.inputs.source.rotations(pos).flatten(0, 1)] if self.kd.needs_rotations
                                else []))
        started = clock()
        self.head(features).sum().backward()
        seconds = clock() - started
        self.optimizer.zero_grad()
        return seconds

    def loss_only(self) -> float:
        """Seconds of the KD loss's forward and backward pass on a batch whose student logits are leaves."""
        pos, v1, v2 = self.draw()
        with torch.no_grad():
            s1, s2 = self.head(torch.cat([self.inputs.source.views(pos, v1),
                                          self.inputs.source.views(pos, v2)])).chunk(2)
            rot = self.head(self.inputs.source.rotations(pos).flatten(0, 1)) if self.kd.needs_rotations else None
        leaves = [x.clone().requires_grad_(True) for x in (s1, s2)]
        rot = rot.view(len(pos), NUM_ROTATIONS, -1).requires_grad_(True) if rot is not None else None
        teacher = self.inputs.teacher
        t1, t2 = teacher.views(pos, v1), teacher.views(pos, v2)
        started = clock()
        batch = KDBatch(index=torch.as_tensor(pos, dtype=torch.long), s_logits=tuple(leaves),
                        s_codes=tuple(self.objective.codes(x) for x in leaves), t_logits=(t1, t2),
                        t_codes=tuple(torch.where(t >= 0, 1.0, -1.0) for t in (t1, t2)),
                        s_rot_logits=rot, t_rot_logits=teacher.rotations(pos) if rot is not None else None)
        loss = self.kd(batch)["loss"]
        if loss.requires_grad:
            loss.backward()
        seconds = clock() - started
        self.optimizer.zero_grad()
        return seconds


def head_flops(spec: dict, rows: int) -> float:
    """FLOPs of an MLP head's forward and backward pass on ``rows`` rows (multiply-add = 2 FLOPs): forward
    2 R (D H + H L); backward the weight gradients of both layers and the input gradient of the second
    (the features need none)."""
    d, h, bits = spec["in_dim"], spec["hidden"], spec["bits"]
    return 2.0 * rows * (2 * d * h + 3 * h * bits)


def _seconds(fn: Callable[[], object]) -> float:
    started = clock()
    fn()
    return clock() - started


def measure(steps: dict[str, MethodStep], repeats: int, what: Callable[[MethodStep], float]) -> dict[str, float]:
    """Median seconds of ``what`` per method, after warm-up; the methods take turns in rounds of a few
    calls, so that a change of the machine's load during the run hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for method in steps.values():
        for _ in range(WARMUP):
            what(method)
    while min(len(t) for t in times.values()) < repeats:
        for name, method in steps.items():
            times[name] += [what(method) for _ in range(min(ROUND, repeats - len(times[name])))]
    return {name: statistics.median(t) for name, t in times.items()}


#: issue 25: no method's step may cost more than this many kd steps, or the benchmark says what keeps it above
LIMIT = 2.0


def report(bits: int, inputs: Inputs, steps: dict[str, MethodStep], repeats: int, gemm: float) -> None:
    step = measure(steps, repeats, MethodStep.step)
    head = measure(steps, repeats, MethodStep.head_only)
    loss = measure(steps, repeats, MethodStep.loss_only)
    parts = {name: {"head": head[name], "kd loss": loss[name], "rest": step[name] - head[name] - loss[name]}
             for name in steps}
    base = step.get("kd")
    print(f"\n{bits} bits: head {inputs.spec['in_dim']} -> {inputs.spec['hidden']} -> {bits}, batch "
          f"{inputs.batch_size}, {inputs.num_train} training images, {VIEWS} views (median of {repeats} steps)")
    print(f"{'method':<15} {'ms/step':>8} {'x kd':>6} {'head':>7} {'kd loss':>8} {'rest':>7} {'head GFLOP/s':>13} "
          f"{'of GEMM':>8}")
    for name, method in steps.items():
        rate = head_flops(inputs.spec, method.head_rows()) / step[name]
        ratio = f"{step[name] / base:6.2f}" if base else f"{'-':>6}"
        cells = " ".join(f"{parts[name][part] * 1e3:{width}.2f}" for part, width in (("head", 7), ("kd loss", 8),
                                                                                     ("rest", 7)))
        print(f"{name:<15} {step[name] * 1e3:8.2f} {ratio} {cells} {rate / 1e9:13.1f} {rate / gemm:8.0%}")
    if base:
        for name in steps:
            if step[name] > LIMIT * base:
                print(above_limit(name, step[name] / base, parts[name], parts["kd"], steps[name]))


def above_limit(name: str, ratio: float, parts: dict, kd_parts: dict, method: "MethodStep") -> str:
    """What keeps a method above LIMIT kd steps: the part of its step with the largest excess over kd's."""
    why = {"head": f"the head's pass over {method.head_rows() // method.inputs.batch_size} rows per image, "
                   "kd's over 2",
           "kd loss": "its distillation loss's own forward and backward pass",
           "rest": "the rest of its step (L_hash, look-ups, Adam)"}
    part = max(parts, key=lambda p: parts[p] - kd_parts[p])
    return (f"{name} costs {ratio:.2f} kd steps (more than {LIMIT:g}): most of the excess is {why[part]}, "
            f"{(parts[part] - kd_parts[part]) * 1e3:.2f} ms over kd's")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO_ROOT / "config" / "study.yaml"),
                        help="grid config whose `brcd`, `kd_settings` and student lr apply (default: the study's)")
    parser.add_argument("--bits", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-size", type=int, default=5000, help="training images (the study's 5,000)")
    parser.add_argument("--hidden", type=int, default=256, help="the head's hidden width (the study's 256)")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per method, after warm-up")
    parser.add_argument("--methods", nargs="+", default=None, choices=KD_LOSSES.names(),
                        help="methods to time (default: all; `kd` is added as the baseline)")
    parser.add_argument("--matmul", choices=LINEAR_KERNELS.names(), default=None,
                        help="the head's matmul kernel (default: the config's `train.student.matmul`)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = load_config(args.config)
    matmul = args.matmul or TrainSettings.from_config(config, "student").matmul
    methods = list(dict.fromkeys(["kd", *(args.methods or KD_LOSSES.names())]))
    gemm = gemm_rate(matmul) * 1e9
    print(f"single-thread fp32 GEMM (1024 x 1024 x 1024) on {matmul}, the heads' kernel: {gemm / 1e9:.1f} GFLOP/s; "
          f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    for bits in args.bits:
        inputs = build_inputs(config, bits, args.batch_size, args.train_size, args.hidden, matmul)
        report(bits, inputs, {name: MethodStep(name, inputs) for name in methods}, args.repeats, gemm)


if __name__ == "__main__":
    main()
