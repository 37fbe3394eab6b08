"""GPU-hours the paper grid (config/paper.yaml) needs, projected from a measured run.

The paper grid runs in ``online`` mode: every training step decodes and
augments fresh images and runs the frozen backbones, so its cost is image
passes, not the small heads the 2-core ``bank`` runs train. The projection
therefore counts, per job of the paper grid (the same job list as
``snakemake -n --configfile config/paper.yaml``: ``brcd.workflow.benchmark_files``),
the backbone forward passes it makes, and prices them with the assumptions
below; the CPU-only rules (evaluation, λ selection, clusters, search timing)
take their measured seconds from the benchmark files of a finished run
(the study, ``config/study.yaml``), scaled by the paper's query × database
sizes.

Assumptions (change them on the command line; docs/runs/paper-projection.md):

- ``--tflops`` (default 60): sustained dense FLOP/s of one data-centre GPU
  (an H100: ~200 TFLOP/s bf16 peak) on frozen-backbone inference at batch
  64-128, about 30% of peak;
- ``--decode`` (default 1500): augmented 224-px views per second that one
  job's CPU workers decode and augment (8 workers at ~5 ms per view). A view
  costs ``max(1 / decode, FLOPs / tflops)``: the decoder and the GPU overlap;
- epochs: every run stops at ``min_epochs + patience * eval_every`` (its
  earliest early stop), and, as an upper bound, at its cap ``epochs``;
- database sizes the lists decide (not readable offline): NUS-WIDE 21
  concepts 193,734 images, MS-COCO 122,218 (the widely used lists), minus
  the query and validation images carved out of them;
- the clean (query, validation, database) images of a job are encoded once
  per job (``OnlineSource`` caches them); teacher views are not cached online.

Backbone FLOPs are counted by ``torch.utils.flop_counter`` on the configured
architectures (built without weights, offline).

    .venv/bin/python benchmarks/paper_gpu_hours.py --measured config/study.yaml
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brcd import workflow  # noqa: E402
from brcd.config import load_config  # noqa: E402
from brcd.models.backbones import forward_gflops as backbone_gflops  # noqa: E402
from brcd.report.results import read_benchmark  # noqa: E402

#: images in the pool the widely used lists describe (query + validation + database)
LIST_POOL_SIZES = {"nuswide": 193_734 + 2_100, "coco": 122_218}
#: CIFAR-10's train set (the database) and test set
CIFAR10 = {"train": 50_000, "test": 10_000}
#: the evaluation rules: their measured seconds are scaled by query x database size
EVALUATE_RULES = ("evaluate_candidates", "evaluate_selected", "evaluate_teacher")
#: CPU-only rules: priced by their measured seconds per run
CPU_RULES = (*EVALUATE_RULES, "select_lambda", "cluster", "split", "time_search")
ROTATIONS = 4  # sskd's rotated copies per image and step


@dataclass(frozen=True)
class Sizes:
    train: int
    query: int
    val: int
    database: int

    @property
    def clean(self) -> int:
        return self.query + self.val + self.database


def dataset_sizes(name: str, entry: Mapping) -> Sizes:
    query = int(entry.get("query") or 0) or int(entry.get("query_per_class", 0)) * 21
    val = int(entry["val"])
    if name == "cifar10":
        database = CIFAR10["train"]
    else:
        database = LIST_POOL_SIZES[name] - query - val
    train = int(entry.get("train") or int(entry.get("train_per_class", 0)) * 10)
    return Sizes(train, query, val, database)


def run_epochs(settings: Mapping, upper: bool) -> int:
    if upper:
        return int(settings["epochs"])
    return min(int(settings["epochs"]), int(settings["min_epochs"]) + int(settings["patience"]) * int(settings["eval_every"]))


class Pricer:
    def __init__(self, tflops: float, decode: float):
        self.tflops, self.decode = tflops, decode

    def views(self, count: float, gflops: float) -> float:
        """Seconds for ``count`` views (augmented, or clean: they decode alike) through backbones of ``gflops`` in all."""
        return count * max(1.0 / self.decode, gflops / (self.tflops * 1e3))


def measured_means(config: Mapping, root: Path) -> dict[str, float]:
    """Rule -> mean seconds per run in a finished run (its Snakemake benchmark files): each job's seconds
    over the runs it handles (``brcd.workflow.benchmark_jobs``: one, but the runs of one method for a job
    that evaluates its λ candidates or its selected seeds; the grids may have other numbers of them)."""
    out = {}
    for rule, jobs in workflow.benchmark_jobs(config).items():
        rows = [(row, runs) for row, runs in ((read_benchmark(root / p), runs) for p, runs in jobs.items()) if row]
        if rows:
            out[rule] = sum(row.seconds for row, _ in rows) / sum(runs for _, runs in rows)
    return out


def measured_sizes(config: Mapping) -> Sizes:
    """The measured run's first dataset (Fashion-MNIST: its train set of 60,000 is the database)."""
    entry = next(iter(config["datasets"].values()))
    database = 60_000 if entry.get("database", "all") == "all" else int(entry["database"])
    return Sizes(int(entry.get("train_per_class", 0)) * 10, int(entry["query"]), int(entry["val"]), database)


def project(paper: Mapping, measured: Mapping, root: Path, pricer: Pricer, flops: Mapping[str, float],
            upper: bool) -> dict[str, tuple[int, float]]:
    """Rule -> (jobs, GPU or CPU hours) for the paper grid; ``flops``: backbone alias -> GFLOPs per image."""
    from brcd.lambdas import lambda_grid, selected_seeds, tuning_seed

    sizes = {name: dataset_sizes(name, entry) for name, entry in paper["datasets"].items()}
    teacher_epochs = run_epochs(paper["train"]["teacher"], upper)
    student_epochs = run_epochs(paper["train"]["student"], upper)
    means = measured_means(measured, root)
    study = measured_sizes(measured)
    hours: dict[str, tuple[int, float]] = {}

    def add(rule: str, seconds: float) -> None:
        jobs, total = hours.get(rule, (0, 0.0))
        hours[rule] = (jobs + 1, total + seconds / 3600)

    for cell in workflow.teacher_cells(paper):
        s, f = sizes[cell.dataset], flops[cell.teacher]
        add("train_teacher", pricer.views(teacher_epochs * s.train * 2, f) + pricer.views(s.val + s.database, f))
        add("encode_teacher", pricer.views(s.clean, f))
    for cell in workflow.student_methods(paper):
        s, ft, fs = sizes[cell.dataset], flops[cell.teacher], flops[cell.student]
        views = student_epochs * s.train * 2 * (1 + (ROTATIONS / 2 if cell.kd == "sskd" else 0))
        per_run = pricer.views(views, ft + fs)
        # once per job: the student's clean val and database features (the teacher's database codes and,
        # in bank mode, its view logits come from the teacher's encode job)
        shared = pricer.views(s.val + s.database, fs)
        if cell.seed == tuning_seed(paper):
            add("train_candidates", len(lambda_grid(paper, cell.kd)) * per_run + shared)
        elif cell.seed == selected_seeds(paper)[0]:  # one job trains every other seed's selected λ (one λ
            # each; two when sym and asym chose different ones: not counted)
            add("train_student", len(selected_seeds(paper)) * per_run + shared)
    for rule, jobs in workflow.benchmark_jobs(paper).items():
        if rule not in CPU_RULES or rule not in means:
            continue
        for path, runs in jobs.items():
            scale = 1.0
            if rule in EVALUATE_RULES:  # search work: queries x database
                s = sizes[Path(path).parts[2]]  # logs/{rule}/{dataset}/...
                scale = (s.query * s.database) / (study.query * study.database)
            add(rule, means[rule] * runs * scale)
    return hours


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paper", default="config/paper.yaml", help="the grid to project (default: config/paper.yaml)")
    parser.add_argument("--measured", default="config/study.yaml", help="the finished run whose benchmark files price "
                        "the CPU-only rules (default: config/study.yaml)")
    parser.add_argument("--results-dir", default=".", help="folder holding that run's logs/ (default: .)")
    parser.add_argument("--tflops", type=float, default=60.0, help="sustained GPU TFLOP/s on backbone inference")
    parser.add_argument("--decode", type=float, default=1500.0, help="augmented views per second one job decodes")
    args = parser.parse_args(argv)
    paper = load_config(args.paper)
    measured = load_config(args.measured)
    pricer = Pricer(args.tflops, args.decode)
    flops = {alias: backbone_gflops(options) for alias, options in paper["backbones"].items()}
    rows = {}
    for upper in (False, True):
        for rule, (jobs, h) in project(paper, measured, Path(args.results_dir), pricer, flops, upper).items():
            rows.setdefault(rule, [jobs, 0.0, 0.0])[2 if upper else 1] = h
    print(f"paper grid {args.paper}: GPU {args.tflops:g} TFLOP/s sustained, {args.decode:g} views/s decoded per job")
    print("backbone GFLOPs per image: " + ", ".join(f"{alias} {value:.2f}" for alias, value in flops.items()))
    print(f"{'rule':<18} {'jobs':>6} {'hours (earliest stop)':>22} {'hours (every run to its cap)':>29}")
    gpu = [0.0, 0.0]
    for rule, (jobs, low, high) in rows.items():
        kind = "CPU" if rule in CPU_RULES else "GPU"
        print(f"{rule:<18} {jobs:>6} {low:>18,.1f} {kind} {high:>25,.1f} {kind}")
        if kind == "GPU":
            gpu[0], gpu[1] = gpu[0] + low, gpu[1] + high
    print(f"{'GPU-hours in all':<25} {gpu[0]:>18,.0f} {gpu[1]:>29,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
