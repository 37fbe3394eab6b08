"""benchmarks/paper_gpu_hours.py: the paper grid's GPU-hours from its job list and a measured run."""
from __future__ import annotations

from pathlib import Path

import pytest

from brcd.config import REPO_ROOT, load_config
from brcd.workflow import benchmark_files, teacher_cells
from tests.conftest import load_benchmark

projection = load_benchmark("paper_gpu_hours")

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


@pytest.fixture(scope="module")
def configs():
    return (load_config(REPO_ROOT / "config/paper.yaml"),
            load_config(REPO_ROOT / "config/study.yaml"))


def test_every_job_of_the_paper_grid_is_priced(configs, tmp_path):
    paper, study = configs
    for rule in ("evaluate", "select_lambda"):  # the measured run's CPU-only jobs: 2 s and 1 s each
        for path, seconds in zip(benchmark_files(study)[rule], (2.0, 2.0)):
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_text(HEADER + f"{seconds}\t0\t1\t1\t1\t1\t0\t0\t90\t1\n")
    flops = {alias: 1.0 for alias in paper["backbones"]}
    pricer = projection.Pricer(tflops=1.0, decode=1e9)  # 1 ms per view and GFLOP: compute-bound
    hours = projection.project(paper, study, tmp_path, pricer, flops, upper=False)
    jobs = {rule: len(paths) for rule, paths in benchmark_files(paper).items()}
    for rule in ("train_teacher", "encode_teacher", "train_candidates", "train_student", "evaluate", "select_lambda"):
        assert hours[rule][0] == jobs[rule], rule
    # a teacher job: (min_epochs + patience * eval_every) epochs x 2 views of each training image, then
    # its validation and database images once, at 1 ms each
    t = paper["train"]["teacher"]
    epochs = t["min_epochs"] + t["patience"] * t["eval_every"]
    expected = sum(2 * epochs * s.train + s.val + s.database
                   for s in (projection.dataset_sizes(c.dataset, paper["datasets"][c.dataset])
                             for c in teacher_cells(paper))) / 1000 / 3600
    assert hours["train_teacher"][1] == pytest.approx(expected)
    # evaluation: the measured 2 s scaled by queries x database (CIFAR-10: 5,000 x 50,000 vs 1,000 x 60,000)
    cifar = [p for p in benchmark_files(paper)["evaluate"] if Path(p).parts[2] == "cifar10"]
    assert len(cifar) == jobs["evaluate"] // 3
    capped = projection.project(paper, study, tmp_path, pricer, flops, upper=True)
    assert capped["train_student"][1] > hours["train_student"][1]  # every run to its cap costs more


def test_decoding_bounds_the_cheap_backbones():
    pricer = projection.Pricer(tflops=60.0, decode=1500.0)
    assert pricer.views(1500, 0.6) == pytest.approx(1.0)  # mobilenet-sized: the decoder is the limit
    assert pricer.views(60, 33.7 * 1000 / 60 * 2) > 1.0  # ViT-sized x2: the GPU is


def test_flops_are_counted_on_the_architecture():
    gflops = projection.backbone_gflops({"model": "timm:test_efficientnet", "input_size": 32})
    assert 0 < gflops < 1
