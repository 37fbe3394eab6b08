"""Input sizes chosen on validation: the teacher alone, then the students without KD, at a few sizes.

Where a dataset's images are far smaller than the backbones' native inputs
(CIFAR-10: 32x32 against 224-260), the input size trades validation mAP
against the time of every backbone pass, which grows about with its square.
This script makes the choice reproducible, on validation only (issue "The
dataset and backbone axes on real data"). On a pilot split of the grid's
first dataset -- the grid's own query and validation draws (same
``split_seed`` and sizes), but only ``--train-per-class`` training images
(default 50) and a ``--database`` of that many train images (default 5000),
with ``--views`` stored views (default 4) -- it

1. builds the teacher's feature bank and trains the teacher of the tuning
   seed at each ``--teacher-sizes`` value, with the grid's schedule and early
   stopping, for every bit length of the grid;
2. with the teacher at the size chosen in 1, trains each student of the grid
   without distillation (``kd: none``) at each ``--student-sizes`` value up to
   the teacher's (a student is there to encode faster than its teacher).

It prints each run's best validation mAP@K (sym), how many epochs it trained,
the pilot bank's build time (wall clock and CPU) and the backbone FLOPs of the
grid's full bank at that size (its backbone passes times the FLOPs of one
image, counted on the architecture: unlike a time, the same on every machine
and under any load). The choice per backbone: the smallest size whose
validation mAP, averaged over the bit lengths, is within ``--tolerance``
(default 0.01) of the best size's, among the sizes whose full bank fits
``--max-bank-tflop`` when given. The pilot's mAP is on a smaller database than
the grid's, so it ranks sizes; it is not the grid's mAP. Test queries are
never scored.

Everything is built in a temporary folder (that folder also caches the
verification of image archives, ``$BRCD_CACHE_DIR``): nothing under
``results/`` is read or written.

    .venv/bin/python benchmarks/input_size.py --config config/cifar10.yaml \\
        --teacher-sizes 32 64 96 128 --student-sizes 32 64 96 --max-bank-tflop 30
"""
from __future__ import annotations

import argparse
import copy
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from brcd.cells import Cell
from brcd.checks import load_checked_config
from brcd.lambdas import NO_KD, tuning_seed, variant_of


@dataclass(frozen=True)
class Trial:
    """One validation run: a backbone at one input size, one bit length."""

    role: str  # teacher, or student (no KD)
    backbone: str
    size: int
    bits: int
    val_map: float  # best validation mAP@K (the teacher's own codes; a student's sym head)
    epochs: int  # trained before early stopping (or the cap)
    bank_seconds: float  # building the pilot's feature bank (wall clock)
    bank_cpu_seconds: float  # the same in CPU time, all threads
    full_bank_tflop: float  # backbone FLOPs of the grid's full bank at this size


def pilot_entry(options: Mapping, train_per_class: int, database: int, database_available: int) -> dict:
    """The grid's dataset entry with fewer training and database images (query and val unchanged,
    so the validation images are the grid's own)."""
    entry = dict(options)
    if "train_per_class" in entry:
        entry["train_per_class"] = min(int(entry["train_per_class"]), train_per_class)
    size = database_available if entry.get("database", "all") in (None, "all") else int(entry["database"])
    entry["database"] = max(min(size, database), int(entry["topk"]))
    if "train" in entry:  # a total, not per class: keep the same share of the pilot database
        entry["train"] = min(int(entry["train"]), entry["database"])
    return entry


def bank_passes(entry: Mapping, dataset: str, views: int, split_seed: int) -> int:
    """Backbone passes of one feature bank: each image a split uses once, each training image
    ``views`` times and 4 rotations (brcd.features)."""
    from brcd.data.splits import make_splits
    from brcd.features import NUM_ROTATIONS

    splits = make_splits(_labels(dataset, entry), entry, split_seed)
    used = np.unique(np.concatenate(list(splits.values())))
    return int(len(used) + len(splits["train"]) * (views + NUM_ROTATIONS))


def _labels(dataset: str, entry: Mapping):
    from brcd.data import DATASETS, create_dataset

    return DATASETS.get(dataset).labels_only(entry) or create_dataset(dataset, entry)


def database_available(dataset: str, entry: Mapping, split_seed: int) -> int:
    from brcd.data.splits import make_splits

    return len(make_splits(_labels(dataset, {**entry, "database": "all"}), {**entry, "database": "all"},
                           split_seed)["database"])


def with_size(config: Mapping, alias: str, size: int) -> dict:
    changed = copy.deepcopy(dict(config))
    changed["backbones"][alias]["input_size"] = int(size)
    return changed


class Pilot:
    """The pilot split and the banks and teachers built on it, in ``folder``."""

    def __init__(self, config: Mapping, dataset: str, folder: Path, train_per_class: int, database: int, views: int):
        from brcd.data import create_dataset
        from brcd.data.splits import write_splits

        self.grid, self.dataset, self.folder = config, dataset, folder
        seed = int(config.get("split_seed", 0))
        options = config["datasets"][dataset]
        entry = pilot_entry(options, train_per_class, database, database_available(dataset, options, seed))
        self.config = copy.deepcopy(dict(config))
        self.config["datasets"] = {dataset: entry}
        self.config["views"] = int(views)
        self.split = str(folder / "split.parquet")
        write_splits(self.split, create_dataset(dataset, entry), entry, seed)
        self.full_passes = bank_passes(options, dataset, int(config["views"]), seed)

    def bank(self, config: Mapping, alias: str, size: int) -> tuple[str, tuple[float, float]]:
        """Build ``alias``'s bank at ``size``: its folder, and the wall and CPU seconds it took."""
        from brcd.features import build_bank

        out = self.folder / f"{alias}-{size}"
        started, cpu = time.perf_counter(), time.process_time()
        build_bank(config, self.dataset, alias, self.split, out)
        return str(out), (time.perf_counter() - started, time.process_time() - cpu)

    def trial(self, role: str, alias: str, size: int, bits: int, result: Mapping, criterion: str,
              seconds: tuple[float, float]) -> Trial:
        from brcd.models.backbones import forward_gflops

        best = result["best"][criterion]
        wall, cpu = seconds
        tflop = self.full_passes * forward_gflops(with_size(self.config, alias, size)["backbones"][alias]) / 1e3
        trial = Trial(role, alias, int(size), int(bits), float(best["map"]),
                      max(int(row["epoch"]) for row in result["history"]), wall, cpu, tflop)
        print(f"{role} {alias} at {size} px, {bits} bits: validation mAP {trial.val_map:.4f} (epoch "
              f"{int(best['epoch'])} of {trial.epochs}); bank {wall:.0f} s ({cpu:.0f} s CPU), full bank "
              f"{tflop:.1f} TFLOP", flush=True)
        return trial


def teacher_trials(pilot: Pilot, sizes: Sequence[int]) -> tuple[list[Trial], dict]:
    """The teacher of the tuning seed at each size and bit length; (trials, {size: (config, bank, {bits: model})})."""
    from brcd.train import train_teacher

    config, alias = pilot.config, pilot.config["teachers"][0]
    trials, built = [], {}
    for size in sizes:
        sized = with_size(config, alias, size)
        bank, seconds = pilot.bank(sized, alias, size)
        models = {}
        for bits in config["bits"]:
            cell = Cell(pilot.dataset, int(bits), config["hash"][0], alias, tuning_seed(config))
            models[bits] = str(pilot.folder / f"teacher-{size}-{bits}.pt")
            result = train_teacher(sized, cell, pilot.split, models[bits], bank=bank)
            trials.append(pilot.trial("teacher", alias, size, bits, result, "teacher", seconds))
        built[size] = (sized, bank, models)
    return trials, built


def student_trials(pilot: Pilot, teacher: tuple, alias: str, sizes: Sequence[int]) -> list[Trial]:
    """Student ``alias`` without KD, of the tuning seed, at each size and bit length (teacher: one built entry)."""
    from brcd.distill.train_student import train_student

    config, teacher_bank, models = teacher
    trials = []
    for size in sizes:
        sized = with_size(config, alias, size)
        bank, seconds = pilot.bank(sized, alias, size)
        for bits in config["bits"]:
            cell = Cell(pilot.dataset, int(bits), config["hash"][0], config["teachers"][0], tuning_seed(config),
                        alias, NO_KD, variant_of(0.0))
            result = train_student(sized, cell, pilot.split, models[bits], str(pilot.folder / "student.pt"),
                                   student_bank=bank, teacher_bank=teacher_bank)
            trials.append(pilot.trial("student", alias, size, bits, result, "sym", seconds))
        shutil.rmtree(bank)
    return trials


def mean_val_map(trials: Sequence[Trial]) -> dict[int, float]:
    """size -> validation mAP averaged over bit lengths, in increasing size (one backbone's trials)."""
    return {size: float(np.mean([t.val_map for t in trials if t.size == size])) for size in sorted({t.size for t in trials})}


def choose(trials: Sequence[Trial], tolerance: float, max_bank_tflop: float | None = None) -> int:
    """The smallest size within ``tolerance`` of the best mean validation mAP (one backbone's trials),
    among the sizes whose full bank fits ``max_bank_tflop`` (if none does, the smallest size)."""
    means = mean_val_map(trials)
    if max_bank_tflop is not None:
        fits = {t.size for t in trials if t.full_bank_tflop <= max_bank_tflop}
        means = {size: m for size, m in means.items() if size in fits} or {min(means): means[min(means)]}
    best = max(means.values())
    return min(size for size, m in means.items() if m >= best - tolerance)


def table(trials: Sequence[Trial]) -> str:
    bits = sorted({t.bits for t in trials})
    by = {(t.role, t.backbone, t.size, t.bits): t for t in trials}
    head = ("role     backbone  size" + "".join(f"  val mAP {b:>2} bits  epochs" for b in bits)
            + "  mean val mAP  bank s  bank CPU s  full bank TFLOP")
    lines = [head]
    for role, backbone in dict.fromkeys((t.role, t.backbone) for t in trials):
        own = [t for t in trials if (t.role, t.backbone) == (role, backbone)]
        for size, mean in mean_val_map(own).items():
            first = by[role, backbone, size, bits[0]]
            lines.append(f"{role:<8} {backbone:<9} {size:>4}"
                         + "".join(f"  {by[role, backbone, size, b].val_map:>16.4f}  {by[role, backbone, size, b].epochs:>6d}"
                                   for b in bits)
                         + f"  {mean:>12.4f}  {first.bank_seconds:>6.0f}  {first.bank_cpu_seconds:>10.0f}"
                         + f"  {first.full_bank_tflop:>15.1f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="grid config YAML (its dataset, backbones, schedule, bits)")
    parser.add_argument("--teacher-sizes", type=int, nargs="+", required=True, help="teacher input sizes to try")
    parser.add_argument("--student-sizes", type=int, nargs="+", required=True, help="student input sizes to try")
    parser.add_argument("--dataset", help="dataset of the grid (default: its first)")
    parser.add_argument("--train-per-class", type=int, default=50, help="pilot training images per class")
    parser.add_argument("--database", type=int, default=5000, help="pilot database size (train images)")
    parser.add_argument("--views", type=int, default=4, help="stored augmented views per pilot training image")
    parser.add_argument("--tolerance", type=float, default=0.01, help="mAP within which a smaller size is preferred")
    parser.add_argument("--max-bank-tflop", type=float,
                        help="only sizes whose full bank takes at most this many backbone TFLOPs")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    started, cpu = time.perf_counter(), time.process_time()
    cache = os.environ.get("BRCD_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="input-size-") as tmp:
        os.environ["BRCD_CACHE_DIR"] = str(Path(tmp) / "cache")  # nothing under results/, read or written
        try:
            config, chosen, trials, entry = _run(args, Path(tmp))
        finally:
            if cache is None:
                os.environ.pop("BRCD_CACHE_DIR", None)
            else:
                os.environ["BRCD_CACHE_DIR"] = cache
    dataset = next(iter(entry))
    entry = entry[dataset]
    teacher = config["teachers"][0]
    print(f"{dataset}, pilot split: {entry.get('train_per_class', entry.get('train'))} training images"
          f"{' per class' if 'train_per_class' in entry else ''}, database {entry['database']}, "
          f"{args.views} views; {config['hash'][0]}, seed {tuning_seed(config)}; the teacher alone, then each "
          f"student without KD (teacher at {chosen[teacher]} px): best validation mAP@K and epochs trained")
    print(table(trials))
    limit = "" if args.max_bank_tflop is None else f", full bank within {args.max_bank_tflop:g} TFLOP"
    print(f"chosen (smallest size within {args.tolerance:g} of the best mean validation mAP{limit}): "
          + ", ".join(f"{alias} {size} px" for alias, size in chosen.items()))
    print(f"({(time.perf_counter() - started) / 60:.1f} min wall, {(time.process_time() - cpu) / 60:.1f} min CPU)")


def _run(args, folder: Path):
    """Both steps in ``folder``: (config, chosen size per backbone, trials, the pilot's dataset entry)."""
    config = load_checked_config(args.config)
    dataset = args.dataset or next(iter(config["datasets"]))
    pilot = Pilot(config, dataset, folder, args.train_per_class, args.database, args.views)
    teacher = config["teachers"][0]
    trials, built = teacher_trials(pilot, args.teacher_sizes)
    chosen = {teacher: choose(trials, args.tolerance, args.max_bank_tflop)}
    # a student is there to encode faster than its teacher: never a larger input
    sizes = [size for size in args.student_sizes if size <= chosen[teacher]]
    if len(sizes) < len(args.student_sizes):
        print(f"student sizes above the teacher's {chosen[teacher]} px are not tried: "
              f"{', '.join(str(s) for s in args.student_sizes if s > chosen[teacher])}")
    for student in config["students"]:
        own = student_trials(pilot, built[chosen[teacher]], student, sizes or [min(args.student_sizes)])
        chosen[student] = choose(own, args.tolerance, args.max_bank_tflop)
        trials += own
    return config, chosen, trials, pilot.config["datasets"]


if __name__ == "__main__":
    main()
