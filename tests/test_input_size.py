"""benchmarks/input_size.py: input sizes chosen on validation from the teacher alone and the no-KD students."""
from __future__ import annotations

import os

import pytest
import yaml

from brcd.config import REPO_ROOT, validate_schema
from tests.conftest import load_benchmark

input_size = load_benchmark("input_size")


def _trial(role, size, bits, val_map, tflop=1.0):
    return input_size.Trial(role, "b", size, bits, val_map, 20, 10.0, 15.0, tflop)


def test_the_smallest_size_near_the_best_is_chosen():
    trials = [_trial("teacher", 32, 16, 0.40), _trial("teacher", 32, 64, 0.50),
              _trial("teacher", 64, 16, 0.55), _trial("teacher", 64, 64, 0.61),
              _trial("teacher", 96, 16, 0.56, 30), _trial("teacher", 96, 64, 0.62, 30)]
    assert input_size.mean_val_map(trials) == pytest.approx({32: 0.45, 64: 0.58, 96: 0.59})
    assert input_size.choose(trials, tolerance=0.01) == 64  # 0.58 is within 0.01 of 0.59
    assert input_size.choose(trials, tolerance=0.005) == 96
    assert input_size.choose(trials, tolerance=0.0, max_bank_tflop=10) == 64  # 96's bank is over budget
    assert input_size.choose(trials, tolerance=0.0, max_bank_tflop=0.5) == 32  # none fits: the smallest
    lines = input_size.table(trials).splitlines()
    assert len(lines) == 4 and lines[2].split()[:3] == ["teacher", "b", "64"] and lines[2].split()[-4] == "0.5800"


def test_pilot_entry_keeps_query_and_val_and_shrinks_the_rest():
    grid = {"train_per_class": 500, "query": 1000, "val": 1000, "database": "all", "topk": 1000}
    assert input_size.pilot_entry(grid, 100, 5000, 50000) == {**grid, "train_per_class": 100, "database": 5000}
    assert input_size.pilot_entry(grid, 100, 500, 50000)["database"] == 1000  # never below topk
    small = {"train": 160, "query": 60, "val": 60, "database": 300, "topk": 50}
    assert input_size.pilot_entry(small, 100, 5000, 400) == small  # a grid smaller than the pilot stays as it is


def test_cli_prints_the_table_and_the_choice_and_writes_no_results(tmp_path, monkeypatch, capsys, torch_threads):
    config = validate_schema(yaml.safe_load((REPO_ROOT / "config" / "test.yaml").read_text()))
    for role in ("teacher", "student"):
        config["train"][role].update(epochs=6, min_epochs=3, eval_every=3, patience=1)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BRCD_CACHE_DIR", raising=False)
    input_size.main(["--config", str(path), "--teacher-sizes", "24", "32", "--student-sizes", "16", "24", "40",
                     "--train-per-class", "100", "--threads", "1"])
    out = capsys.readouterr().out
    assert "synthetic, pilot split: 40 training images per class, database 300, 4 views" in out
    table = out.split("\nrole ")[1].split("\nchosen")[0].splitlines()[1:]  # the rows under the header
    rows = {tuple(line.split()[:3]): float(line.split()[5]) for line in table}
    assert set(rows) == {("teacher", "tteacher", "24"), ("teacher", "tteacher", "32"),
                         ("student", "tstudent", "16"), ("student", "tstudent", "24")}
    assert all(0.0 < value <= 1.0 for value in rows.values())
    teacher = {int(size): value for (role, _, size), value in rows.items() if role == "teacher"}
    best = max(teacher.values())
    expected = min(size for size, value in teacher.items() if value >= best - 0.01)
    assert f"chosen (smallest size within 0.01 of the best mean validation mAP): tteacher {expected} px, " in out
    # the full bank's FLOPs: the tiny grid's backbone passes (split sizes, 4 views + 4 rotations) times one image's
    from brcd.models.backbones import forward_gflops

    passes = input_size.bank_passes(config["datasets"]["synthetic"], "synthetic", config["views"], 0)
    assert passes == 300 + 60 + 60 + 160 * (4 + 4)  # database, query, val; train views and rotations
    tflop = passes * forward_gflops({**config["backbones"]["tteacher"], "input_size": 32}) / 1e3
    assert f"tteacher at 32 px, 16 bits: validation mAP" in out and f"full bank {tflop:.1f} TFLOP" in out
    assert "student sizes above the teacher's" in out and ("student", "tstudent", "40") not in rows
    assert not (tmp_path / "results").exists()  # nothing under results/, not even the archive cache
    assert "BRCD_CACHE_DIR" not in os.environ
