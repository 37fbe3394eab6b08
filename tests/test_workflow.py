"""The Snakemake workflow: dry runs of the shipped configs and real runs of the tiny one."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from brcd.config import REPO_ROOT
from brcd.data.splits import Splits


def snakemake(workdir, *args, check=True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO_ROOT / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.mark.parametrize("config", ["demo.yaml", "test.yaml"])
def test_dry_run_plans_jobs(tmp_path, config):
    out = snakemake(tmp_path, "-n", "--configfile", str(REPO_ROOT / "config" / config)).stdout
    assert "split" in out


def test_tiny_config_builds_split(tmp_path):
    snakemake(tmp_path, "results/synthetic/split.parquet", "--configfile", str(REPO_ROOT / "config" / "test.yaml"))
    splits = Splits(tmp_path / "results/synthetic/split.parquet")
    assert splits.metadata["counts"] == {"train": 80, "query": 60, "val": 60, "database": 300}
    assert (tmp_path / "logs/split/synthetic.log").exists()


def test_bad_config_fails_before_any_job(tmp_path):
    config = yaml.safe_load((REPO_ROOT / "config" / "test.yaml").read_text())
    config["kd"] = ["none", "telepathy"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "-n", "--configfile", str(path), check=False)
    assert result.returncode != 0
    assert "telepathy" in result.stdout + result.stderr
