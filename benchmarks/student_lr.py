"""The students' learning rate, chosen on validation: the no-KD student at each candidate lr.

A grid whose students would not finish in its time budget may train them at a
higher learning rate, the same for every method, chosen on validation only
(issue "The study"). This script makes that choice reproducible: it trains the
student without distillation (``kd: none``) of the tuning seed at each ``--lr``,
for every bit length of the grid, with the grid's schedule and early stopping,
and prints each run's best validation mAP@K (sym) and how many epochs it
trained. The chosen lr is the one with the best mean validation mAP over the
bit lengths; test queries are never read.

It reads what the grid's workflow already built in ``--workdir`` (its
``results/``: the split, both feature banks and the tuning seed's teacher of
each bit length), so run the grid's teachers first, e.g.
``snakemake --cores 2 --configfile config/study.yaml --until encode_teacher``.
Nothing under ``results/`` is written: the trial models go to a temporary folder.

    .venv/bin/python benchmarks/student_lr.py --config config/study.yaml \\
        --lr 0.001 0.002 0.004 0.008 0.016
"""
from __future__ import annotations

import argparse
import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from brcd.cells import Cell
from brcd.checks import load_checked_config
from brcd.lambdas import NO_KD, tuning_seed, variant_of


@dataclass(frozen=True)
class Trial:
    """One no-KD student run at one lr."""

    lr: float
    bits: int
    val_map: float  # best validation mAP@K of the sym head
    best_epoch: int
    epochs: int  # trained before early stopping (or the cap)


def no_kd_cell(config: Mapping, bits: int, dataset: str | None = None) -> Cell:
    """The tuning seed's student without KD, of the grid's first dataset, teacher and student."""
    return Cell(dataset or next(iter(config["datasets"])), int(bits), config["hash"][0], config["teachers"][0],
                tuning_seed(config), config["students"][0], NO_KD, variant_of(0.0))


def with_student_lr(config: Mapping, lr: float) -> dict:
    changed = copy.deepcopy(dict(config))
    changed["train"]["student"]["lr"] = float(lr)
    return changed


def lr_trials(config: Mapping, cell: Cell, lrs: Sequence[float], workdir: str | Path = ".",
              device="cpu") -> list[Trial]:
    """Train ``cell`` once per lr (same seed, same draws; the grid's files under ``workdir``, loaded
    once) and report each run."""
    from brcd.distill.train_student import train_student
    from brcd.workflow import load_grid_student_inputs

    loaded = load_grid_student_inputs(config, cell, workdir, device)
    trials = []
    with tempfile.TemporaryDirectory() as tmp:
        for lr in lrs:
            result = train_student(with_student_lr(config, lr), cell, None, None, str(Path(tmp) / f"lr{lr:g}.pt"),
                                   device=device, inputs=loaded)
            best = result["best"]["sym"]
            trials.append(Trial(float(lr), cell.bits, float(best["map"]), int(best["epoch"]),
                                max(int(row["epoch"]) for row in result["history"])))
            print(f"{cell.bits} bits, lr {lr:g}: validation mAP {trials[-1].val_map:.4f} (epoch "
                  f"{trials[-1].best_epoch} of {trials[-1].epochs})", flush=True)
    return trials


def mean_val_map(trials: Sequence[Trial]) -> dict[float, float]:
    """lr -> its validation mAP averaged over bit lengths, in increasing lr."""
    return {lr: float(np.mean([t.val_map for t in trials if t.lr == lr])) for lr in sorted({t.lr for t in trials})}


def choose(trials: Sequence[Trial]) -> float:
    """The lr with the best mean validation mAP over bit lengths (the smaller lr on an exact tie)."""
    means = mean_val_map(trials)
    return max(means, key=means.get)  # max keeps the first (smallest) lr of a tie


def table(trials: Sequence[Trial]) -> str:
    bits = sorted({t.bits for t in trials})
    by = {(t.lr, t.bits): t for t in trials}
    head = "lr       " + "".join(f"  val mAP {b:>2} bits  epochs" for b in bits) + "  mean val mAP"
    lines = [head]
    for lr, mean in mean_val_map(trials).items():
        lines.append(f"{lr:<9g}" + "".join(f"  {by[lr, b].val_map:>16.4f}  {by[lr, b].epochs:>6d}" for b in bits)
                     + f"  {mean:>12.4f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="grid config YAML (its schedule, seeds and bit lengths)")
    parser.add_argument("--lr", type=float, nargs="+", required=True, help="candidate student learning rates")
    parser.add_argument("--workdir", default=".", help="working copy whose results/ holds the grid's teachers")
    parser.add_argument("--dataset", help="dataset of the grid (default: its first)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    config = load_checked_config(args.config)
    trials = []
    for bits in config["bits"]:
        cell = no_kd_cell(config, bits, args.dataset)
        trials += lr_trials(config, cell, args.lr, args.workdir)
    print(f"{cell.dataset}, {cell.teacher} -> {cell.student} ({cell.hash}), no KD, seed {cell.seed}: "
          "best validation mAP@K (sym) and epochs trained")
    print(table(trials))
    print(f"chosen: lr {choose(trials):g} (best mean validation mAP)")


if __name__ == "__main__":
    main()
