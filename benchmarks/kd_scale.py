"""Each method's λ scale: ‖∇L_hash‖ / ‖∇L_kd‖ at initialisation, and the λ grids it suggests.

A student minimises L_hash + λ·L_kd. The losses live on very different scales
(issue 27: at initialisation `sp`'s gradient is ~100x smaller than L_hash's,
`pkt`'s ~3,000x), so one λ grid for every method tunes some of them only at
weights where their KD term barely acts. Each method's grid is therefore
centred on its own scale (SPEC §4): its published weight where its paper's
code gives one (SP β = 3,000, PKT β = 30,000, CRD β = 0.8, RKD's weights are
inside the loss: β = 1, BRCD λ = 1), else the ratio r = ‖∇L_hash‖ / ‖∇L_kd‖
at initialisation, measured here -- at λ = r both terms pull the head equally.

For every method of the grid and every bit length this script builds the
tuning seed's student head exactly as training starts (same seed, same
initialisation), draws one fixed batch (the one the end-of-training
measurement uses, ``brcd.distill.train_student.gradient_norms``) and prints
both gradient norms (with respect to the head's parameters), r, the published
weight and the suggested grid: centre c = the published weight, else r (its
geometric mean over bit lengths, to one significant digit), grid c × {0.1, 1,
10}, widened by decades until it holds r where r lies outside it. Test queries are never read; nothing under ``results/`` is written.

It reads what the grid's workflow built in ``--workdir``: the split, both
feature banks, the tuning seed's teacher of each bit length and its clusters
(for the BRCD variants), e.g. after
``snakemake --cores 2 --configfile config/demo.yaml --until cluster encode_teacher``:

    .venv/bin/python benchmarks/kd_scale.py --config config/demo.yaml
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from brcd.cells import Cell
from brcd.checks import load_checked_config
from brcd.lambdas import NO_KD, format_lambda, tuning_seed, variant_of

#: published weights of L_kd (the CRD benchmark's β for sp, pkt, crd and rkd, whose 25/50 term weights sit
#: inside the loss; SPEC §4's λ = 1 for BRCD and its ablations). Methods not listed: the measured ratio.
PUBLISHED = {"sp": 3000.0, "pkt": 30000.0, "rkd": 1.0, "crd": 0.8,
             "brcd": 1.0, "brcd_nocluster": 1.0, "brcd_nomask": 1.0, "brcd_plain": 1.0}


@dataclass(frozen=True)
class Scale:
    """One method and bit length at initialisation."""

    kd: str
    bits: int
    grad_hash: float  # ‖∇L_hash‖ w.r.t. the head's parameters
    grad_kd: float  # ‖∇L_kd‖ (unweighted)

    @property
    def ratio(self) -> float:
        """‖∇L_hash‖ / ‖∇L_kd‖: the λ at which both terms pull the head equally."""
        return self.grad_hash / self.grad_kd if self.grad_kd > 0 else math.inf


def student_cell(config: Mapping, kd: str, bits: int, dataset: str | None = None) -> Cell:
    return Cell(dataset or next(iter(config["datasets"])), int(bits), config["hash"][0], config["teachers"][0],
                tuning_seed(config), config["students"][0], kd, variant_of(1.0))


def measure(config: Mapping, cell: Cell, workdir: str | Path = ".", device="cpu") -> Scale:
    """Both gradient norms of ``cell``'s student at initialisation, on the fixed probe batch, from the
    grid's files under ``workdir`` (what the workflow's student job reads)."""
    from brcd.checkpoint import build_head
    from brcd.config import TrainSettings
    from brcd.distill import KD_LOSSES, create_distill_loss
    from brcd.distill.train_student import gradient_norms, kd_settings, student_step
    from brcd.hashing import create_objective
    from brcd.runtime import seed_everything
    from brcd.workflow import load_grid_student_inputs

    loaded = load_grid_student_inputs(config, cell, workdir, device)
    seed_everything(cell.seed)  # as train_student: the head every λ run starts from
    head = build_head(loaded.spec).to(device)
    objective = create_objective(cell.hash, cell.bits).to(device)
    kd_loss = create_distill_loss(cell.kd, cell.bits, loaded.num_train, kd_settings(config),
                                  loaded.clusters).to(device)
    step = student_step(head, objective, kd_loss, loaded.student_source, loaded.teacher, 1.0)
    settings = TrainSettings.from_config(config, "student")
    norms = gradient_norms(head, step, loaded.num_train, loaded.student_source.num_views, settings.batch_size,
                           cell.seed, 1.0)
    return Scale(cell.kd, cell.bits, norms["grad_norm_hash"], norms["grad_norm_kd"])


def one_digit(value: float) -> float:
    """``value`` to one significant digit: 123 -> 100, 0.37 -> 0.4, 2600 -> 3000."""
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"no λ scale from a ratio of {value}")
    exponent = math.floor(math.log10(value))
    return float(format_lambda(round(value / 10 ** exponent) * 10 ** exponent))


def geometric_mean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def suggested_grid(centre: float, ratio: float | None = None) -> list[float]:
    """centre × {0.1, 1, 10}, widened by decades until it holds ``ratio`` too (the λ at which both terms
    pull equally) where that lies outside."""
    low, high = centre / 10, centre * 10
    if ratio is not None and math.isfinite(ratio) and ratio > 0:
        while low > ratio * 1.0001:
            low /= 10
        while high < ratio / 1.0001:
            high *= 10
    grid, value = [], low
    while value <= high * 1.0001:
        grid.append(float(format_lambda(value)))
        value *= 10
    return grid


def suggestions(scales: Sequence[Scale]) -> dict[str, tuple[float, str, list[float]]]:
    """method -> (centre, where the centre comes from, suggested grid), in the order of ``scales``."""
    out = {}
    for kd in dict.fromkeys(s.kd for s in scales):
        ratio = geometric_mean([s.ratio for s in scales if s.kd == kd])
        if kd in PUBLISHED:
            out[kd] = (PUBLISHED[kd], "published", suggested_grid(PUBLISHED[kd], ratio))
        else:
            centre = one_digit(ratio)
            out[kd] = (centre, "ratio", suggested_grid(centre))
    return out


def table(scales: Sequence[Scale]) -> str:
    lines = [f"{'method':<16}{'bits':>5}{'|grad L_hash|':>15}{'|grad L_kd|':>14}{'ratio r':>12}"]
    for s in scales:
        lines.append(f"{s.kd:<16}{s.bits:>5}{s.grad_hash:>15.4g}{s.grad_kd:>14.4g}{s.ratio:>12.4g}")
    lines += ["", f"{'method':<16}{'centre':>10}  {'from':<10} suggested grid"]
    for kd, (centre, source, grid) in suggestions(scales).items():
        lines.append(f"{kd:<16}{format_lambda(centre):>10}  {source:<10} [{', '.join(map(format_lambda, grid))}]")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="grid config YAML (its methods, bit lengths, seed)")
    parser.add_argument("--workdir", default=".", help="working copy whose results/ holds the grid's teachers")
    parser.add_argument("--dataset", help="dataset of the grid (default: its first)")
    parser.add_argument("--kd", nargs="+", help="methods to measure (default: every method of the grid)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    config = load_checked_config(args.config)
    methods = args.kd or [kd for kd in config["kd"] if kd != NO_KD]
    scales = []
    for kd in methods:
        for bits in config["bits"]:
            cell = student_cell(config, kd, bits, args.dataset)
            scales.append(measure(config, cell, args.workdir))
            print(f"{kd}, {bits} bits: r = {scales[-1].ratio:.4g}", flush=True)
    print(f"{cell.dataset}, {cell.teacher} -> {cell.student} ({cell.hash}), seed {cell.seed}, at initialisation, "
          "one fixed batch: gradient norms w.r.t. the student head")
    print(table(scales))


if __name__ == "__main__":
    main()
