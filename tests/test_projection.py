"""benchmarks/paper_gpu_hours.py: the paper grid's GPU-hours from its job list and a measured run."""
from __future__ import annotations

from pathlib import Path

import pytest

from brcd.config import REPO_ROOT, load_config
from brcd.workflow import benchmark_files, benchmark_jobs, teacher_cells
from tests.conftest import load_benchmark

projection = load_benchmark("paper_gpu_hours")

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


@pytest.fixture(scope="module")
def configs():
    return (load_config(REPO_ROOT / "config/paper.yaml"),
            load_config(REPO_ROOT / "config/study.yaml"))


def test_every_job_of_the_paper_grid_is_priced(configs, tmp_path):
    paper, study = configs
    measured = benchmark_jobs(study)
    for rule in ("evaluate_candidates", "evaluate_selected", "select_lambda"):  # the measured run's CPU-only jobs:
        for path in list(measured[rule])[:2]:  # 2 s each for two of them
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_text(HEADER + "2.0\t0\t1\t1\t1\t1\t0\t0\t90\t1\n")
    flops = {alias: 1.0 for alias in paper["backbones"]}
    pricer = projection.Pricer(tflops=1.0, decode=1e9)  # 1 ms per view and GFLOP: compute-bound
    hours = projection.project(paper, study, tmp_path, pricer, flops, upper=False)
    jobs = {rule: len(paths) for rule, paths in benchmark_files(paper).items()}
    for rule in ("train_teacher", "encode_teacher", "train_candidates", "train_student", "evaluate_candidates",
                 "evaluate_selected", "select_lambda"):
        assert hours[rule][0] == jobs[rule], rule
    # a teacher job: (min_epochs + patience * eval_every) epochs x 2 views of each training image, then
    # its validation and database images once, at 1 ms each
    t = paper["train"]["teacher"]
    epochs = t["min_epochs"] + t["patience"] * t["eval_every"]
    expected = sum(2 * epochs * s.train + s.val + s.database
                   for s in (projection.dataset_sizes(c.dataset, paper["datasets"][c.dataset])
                             for c in teacher_cells(paper))) / 1000 / 3600
    assert hours["train_teacher"][1] == pytest.approx(expected)
    # evaluation is priced per run: a study job evaluating the selected λ of 4 seeds took 2 s, so 0.5 s a
    # run; a paper job evaluates 2 seeds, on more queries x database (CIFAR-10: 5,000 x 50,000 vs 1,000 x 60,000)
    assert set(list(measured["evaluate_selected"].values())[:2]) == {4}
    study_sizes = projection.measured_sizes(study)
    expected = 0.0
    for path, runs in benchmark_jobs(paper)["evaluate_selected"].items():
        assert runs == 2
        s = projection.dataset_sizes(Path(path).parts[2], paper["datasets"][Path(path).parts[2]])
        expected += 0.5 * runs * (s.query * s.database) / (study_sizes.query * study_sizes.database)
    assert hours["evaluate_selected"][1] == pytest.approx(expected / 3600)
    cifar = [p for p in benchmark_files(paper)["evaluate_candidates"] if Path(p).parts[2] == "cifar10"]
    assert len(cifar) == jobs["evaluate_candidates"] // 3
    capped = projection.project(paper, study, tmp_path, pricer, flops, upper=True)
    assert capped["train_student"][1] > hours["train_student"][1]  # every run to its cap costs more


def test_decoding_bounds_the_cheap_backbones():
    pricer = projection.Pricer(tflops=60.0, decode=1500.0)
    assert pricer.views(1500, 0.6) == pytest.approx(1.0)  # mobilenet-sized: the decoder is the limit
    assert pricer.views(60, 33.7 * 1000 / 60 * 2) > 1.0  # ViT-sized x2: the GPU is


def test_flops_are_counted_on_the_architecture():
    gflops = projection.backbone_gflops({"model": "timm:test_efficientnet", "input_size": 32})
    assert 0 < gflops < 1
