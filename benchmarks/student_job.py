"""Where a student job's time goes: one real job per method, split into its phases.

For every method of the grid this runs ``python3 -m brcd train-student`` -- the
command the workflow's student jobs run, as a process of its own -- on the
grid's files (the tuning seed, the centre of the method's λ grid, the first
bit length unless ``--bits``), writing into a temporary folder, and prints
per method:

- ``start-up``: the process's wall time outside the phases below (interpreter,
  imports, parsing, exit);
- ``loading``: split, the student's bank, the validation data (the
  teacher's part apart);
- ``teacher``: the teacher's part of the loading (its checkpoint, clusters, stored codes and
  logits, or computing them when a grid has no stored files);
- ``steps``, ``validation``, ``writing``: training steps, validations and the
  model, history and code files;
- the training steps' rate in the head's matrix-product FLOPs (forward and
  backward of both layers, two views per image, four rotations more for the
  methods that need them) as a fraction of this machine's single-core fp32
  GEMM rate on the kernel the grid's students use (``train.student.matmul``),
  measured in the same run (``GEMM`` below).

It reads what the grid's workflow built in ``--workdir``, e.g. after
``snakemake --cores 2 --configfile config/demo.yaml --until encode_teacher cluster``:

    .venv/bin/python benchmarks/student_job.py --config config/demo.yaml

Times depend on the machine and on what else runs: compare runs on one
machine, with nothing else running, and name it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from brcd.cells import Cell
from brcd.checks import load_checked_config
from brcd.config import TrainSettings
from brcd.lambdas import grid_centre, lambda_grid, tuning_seed, variant_of
from brcd.models.linear import gemm_rate

#: the phases a job reports (brcd.distill.train_student.PHASES) after the start-up this script measures
PHASES = ("loading", "teacher", "steps", "validation", "writing")


@dataclass(frozen=True)
class JobTime:
    kd: str
    bits: int
    total: float
    phases: Mapping[str, float]
    head_gflop: float  # the head's matrix-product work of the training steps

    @property
    def startup(self) -> float:
        return self.total - sum(self.phases.values())


def method_cell(config: Mapping, kd: str, bits: int) -> Cell:
    """The tuning seed's run of ``kd`` at the centre of its λ grid."""
    lam = grid_centre(lambda_grid(config, kd))
    return Cell(next(iter(config["datasets"])), int(bits), config["hash"][0], config["teachers"][0],
                tuning_seed(config), config["students"][0], kd, variant_of(lam))


def job_command(config_path: str, config: Mapping, cell: Cell, workdir: Path, out: Path) -> list[str]:
    """The workflow's train-student command for ``cell`` (its inputs under ``workdir``), writing into ``out``."""
    from brcd.errors import DataError
    from brcd.workflow import grid_student_files

    try:
        files = grid_student_files(config, cell, workdir)
    except DataError as exc:  # a script's error: its message, no traceback
        raise SystemExit(str(exc)) from None
    command = [sys.executable, "-m", "brcd", "train-student", "--config", config_path, "--dataset", cell.dataset,
               "--bits", str(cell.bits), "--hash", cell.hash, "--teacher", cell.teacher, "--student", cell.student,
               "--kd", cell.kd, "--variant", cell.variant, "--seed", str(cell.seed), "--split", files["split"][0],
               "--teacher-checkpoint", files["teacher"][0], "--teacher-codes", files["teacher_codes"][0],
               "--out", str(out / "model.pt"), "--log", str(out / "history.tsv"),
               "--codes", str(out / "codes.parquet"), "--codes-asym", str(out / "codes_asym.parquet"),
               "--timings", str(out / "timings.json"), "--threads", "1"]
    for flag, name in (("--student-bank", "student_bank"), ("--teacher-logits", "teacher_logits"),
                       ("--clusters", "clusters")):
        command += [flag, files[name][0]] if files[name] else []
    return command


def head_gflop(config: Mapping, cell: Cell, workdir: Path, out: Path) -> float:
    """The head's matrix-product FLOPs (GFLOP) over the job's training steps, from its checkpoint and
    history: per sample 2(in·h + h·L) forward, as much for the weight gradients, 2·h·L for the gradient
    into the hidden layer; 2 views per image, and 4 rotations more where the method needs them."""
    import csv

    import torch

    from brcd.data.splits import Splits
    from brcd.distill import KD_LOSSES
    from brcd.workflow import student_job_inputs

    head = torch.load(out / "model.pt", weights_only=True)["head"]
    width, hidden, bits = head["in_dim"], head["hidden"], head["bits"]
    per_sample = 4 * width * hidden + 6 * hidden * bits
    samples = 2 + (4 if KD_LOSSES.get(cell.kd).needs_rotations else 0)
    with open(out / "history.tsv") as handle:
        epochs = len(list(csv.DictReader(handle, delimiter="\t")))
    num_train = len(Splits(workdir / student_job_inputs(config, cell)["split"][0]).indices["train"])
    batch = min(int(config["train"]["student"]["batch_size"]), num_train)
    steps = epochs * (num_train // batch)
    return per_sample * samples * batch * steps / 1e9


def run_job(config_path: str, config: Mapping, cell: Cell, workdir: Path) -> JobTime:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        command = job_command(config_path, config, cell, workdir, out)
        started = time.perf_counter()
        done = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        total = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{cell.model}: the job failed:\n{done.stderr[-2000:]}")
        phases = json.loads((out / "timings.json").read_text())
        work = head_gflop(config, cell, workdir, out)
    return JobTime(cell.kd, cell.bits, total, {phase: float(phases[phase]) for phase in PHASES}, work)


def table(jobs: Sequence[JobTime], gemm: float) -> str:
    lines = [f"{'method':<16} {'total':>6} {'start-up':>8} " + " ".join(f"{p:>10}" for p in PHASES)
             + f" {'steps GFLOP/s':>13} {'of GEMM':>7}"]
    for job in jobs:
        rate = job.head_gflop / job.phases["steps"] if job.phases["steps"] > 0 else float("nan")
        lines.append(f"{job.kd:<16} {job.total:6.2f} {job.startup:8.2f} "
                     + " ".join(f"{job.phases[p]:10.2f}" for p in PHASES) + f" {rate:13.1f} {rate / gemm:7.0%}")
    total = sum(job.total for job in jobs)
    share = {p: sum(job.phases[p] for job in jobs) / total for p in PHASES}
    share["start-up"] = sum(job.startup for job in jobs) / total
    lines.append("share of all jobs' time: " + ", ".join(f"{name} {value:.0%}" for name, value in share.items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="grid config YAML (its methods, λ grids, tuning seed)")
    parser.add_argument("--workdir", default=".", help="working copy whose results/ holds the grid's teachers")
    parser.add_argument("--kd", nargs="+", help="methods to run (default: every method of the grid)")
    parser.add_argument("--bits", type=int, help="bit length (default: the grid's first)")
    args = parser.parse_args(argv)

    config = load_checked_config(args.config)
    config_path = str(Path(args.config).resolve())
    workdir = Path(args.workdir).resolve()
    matmul = TrainSettings.from_config(config, "student").matmul
    gemm = gemm_rate(matmul, clock=time.perf_counter)  # wall-clock, like the jobs' phases
    jobs = []
    for kd in args.kd or config["kd"]:
        cell = method_cell(config, kd, args.bits or config["bits"][0])
        jobs.append(run_job(config_path, config, cell, workdir))
        print(f"{cell.model}, {cell.bits} bits: {jobs[-1].total:.2f} s", flush=True)
    print(f"GEMM (fp32, 1 thread, this machine, measured now) on {matmul}, the students' kernel: {gemm:.1f} GFLOP/s")
    print(f"one train-student job per method, seed {tuning_seed(config)}, the centre of each λ grid, "
          "1 thread; seconds:")
    print(table(jobs, gemm))


if __name__ == "__main__":
    main()
