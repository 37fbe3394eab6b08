"""The Snakemake workflow: dry runs, early config errors, the tiny grid end to end,
partial reruns."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from brcd.config import REPO_ROOT
from brcd.data.splits import Splits

TEST_CONFIG = REPO_ROOT / "config" / "test.yaml"
STUDENT = "results/synthetic/16/student/cibhash/tteacher/tstudent/{kd}/seed0"
TEACHER = "results/synthetic/16/teacher/cibhash/tteacher/seed0"


def snakemake(workdir, *args, check=True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO_ROOT / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout}\n{result.stderr}")
    return result


def planned_jobs(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> count."""
    table = output.split("Job stats:")[1].split("\n\n")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


@pytest.mark.parametrize("config", ["demo.yaml", "test.yaml"])
def test_dry_run_plans_jobs(tmp_path, config):
    out = snakemake(tmp_path, "-n", "--configfile", str(REPO_ROOT / "config" / config)).stdout
    jobs = planned_jobs(out)
    for rule in ("split", "features", "train_teacher", "encode_teacher", "cluster", "train_student", "encode", "evaluate",
                 "time_encoder", "time_search", "report"):
        assert jobs.get(rule), (rule, jobs)
    if config == "demo.yaml":
        assert jobs["train_student"] == 13 * 2 and jobs["evaluate"] == 2 * (1 + 13 * 2) and jobs["features"] == 2


def test_tiny_config_builds_split(tmp_path):
    snakemake(tmp_path, "results/synthetic/split.parquet", "--configfile", str(TEST_CONFIG))
    splits = Splits(tmp_path / "results/synthetic/split.parquet")
    assert splits.metadata["counts"] == {"train": 160, "query": 60, "val": 60, "database": 300}
    assert (tmp_path / "logs/split/synthetic.log").exists()


def _bad_config(tmp_path, mutate):
    config = yaml.safe_load(TEST_CONFIG.read_text())
    mutate(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("mutate,expected", [
    (lambda c: c.update(kd=["none", "telepathy"]), r"unknown value 'telepathy' in `kd`; allowed values: brcd, brcd_nocluster"),
    (lambda c: c.update(students=["lite9"]), r"`students` names backbone alias 'lite9'.*defined aliases: .*tteacher"),
    (lambda c: c.update(paradigms=["sym", "both"]), r"unknown value 'both' in `paradigms`; allowed values: asym, sym"),
    (lambda c: c["datasets"].update(mnist=c["datasets"]["synthetic"]), r"unknown value 'mnist' in `datasets`; allowed values: cifar10"),
    (lambda c: c.update(bits=[16, 12]), r"key `bits.1`: 12 is not a multiple of 8"),
    (lambda c: c.update(hash=[]), r"hash.*should be non-empty"),
    (lambda c: c.update(hash=["spectral"]), r"unknown value 'spectral' in `hash`; allowed values: cibhash, greedyhash"),
])
def test_bad_config_fails_before_any_job(tmp_path, mutate, expected):
    result = snakemake(tmp_path, "-n", "--configfile", str(_bad_config(tmp_path, mutate)), check=False)
    assert result.returncode != 0
    assert re.search(expected, result.stdout + result.stderr), result.stdout + result.stderr
    assert not (tmp_path / "results" / "synthetic").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny synthetic grid, end to end through Snakemake (about a minute)."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    snakemake(workdir, "--configfile", str(TEST_CONFIG))
    return workdir


def test_tiny_grid_end_to_end(tiny_run):
    for kd in ("none", "brcd"):
        for paradigm in ("sym", "asym"):
            metrics = json.loads((tiny_run / STUDENT.format(kd=kd) / "metrics" / f"{paradigm}.json").read_text())
            assert metrics["kd"] == kd and metrics["paradigm"] == paradigm and 0 <= metrics["metrics"]["map@50"] <= 1
    assert (tiny_run / TEACHER / "metrics" / "teacher.json").exists()
    assert (tiny_run / "results/timing/search/16.json").exists()
    assert (tiny_run / "results/timing/encoder/synthetic/tstudent.json").exists()
    report = (tiny_run / "reports" / "test.md").read_text()
    assert "| teacher (`tteacher`)" in report and "| student, no KD (`tstudent`)" in report and "| `brcd`" in report
    assert "16 bits sym" in report and "16 bits asym" in report
    for figure in re.findall(r"\]\((test/[^)]+\.png)\)", report):
        assert (tiny_run / "reports" / figure).stat().st_size > 0


def test_brcd_aligns_the_student_better_than_no_kd(tiny_run):
    """BRCD lowers the teacher-student distance (ISD) in the asymmetric paradigm."""
    isd = {kd: json.loads((tiny_run / STUDENT.format(kd=kd) / "metrics" / "asym.json").read_text())["metrics"]["isd"]
           for kd in ("none", "brcd")}
    assert isd["brcd"] < isd["none"] - 0.05, isd


def test_removing_one_cell_reruns_only_that_cell(tiny_run):
    up_to_date = snakemake(tiny_run, "-n", "--configfile", str(TEST_CONFIG))
    assert "Nothing to be done" in up_to_date.stdout + up_to_date.stderr
    cell = tiny_run / STUDENT.format(kd="brcd")
    backup = tiny_run / "backup"
    shutil.copytree(cell, backup)
    try:
        for name in ("model.pt", "codes.parquet", "codes_asym.parquet", "metrics"):
            path = cell / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        jobs = planned_jobs(snakemake(tiny_run, "-n", "--configfile", str(TEST_CONFIG)).stdout)
        assert jobs == {"train_student": 1, "encode": 1, "evaluate": 2, "report": 1, "all": 1}, jobs
        # Naming one metrics file builds only what that cell needs.
        target = str(Path(STUDENT.format(kd="brcd")) / "metrics" / "asym.json")
        jobs = planned_jobs(snakemake(tiny_run, "-n", target, "--configfile", str(TEST_CONFIG)).stdout)
        assert jobs == {"train_student": 1, "encode": 1, "evaluate": 1}, jobs
    finally:
        shutil.rmtree(cell)
        shutil.copytree(backup, cell)
