"""benchmarks/student_job.py: one real train-student job per method and where its time goes."""
from __future__ import annotations


import pytest
import yaml

from brcd.config import REPO_ROOT, validate_schema
from tests.conftest import built_benchmark_grid, load_benchmark

student_job = load_benchmark("student_job")


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A working copy whose results/ holds what the workflow builds before the students (tiny config)."""
    root = tmp_path_factory.mktemp("student_job")
    config = validate_schema(yaml.safe_load((REPO_ROOT / "config" / "test.yaml").read_text()))
    config["bits"] = [16]
    for role in ("teacher", "student"):
        config["train"][role].update(epochs=3, min_epochs=3, eval_every=3, patience=1)
    config_file = built_benchmark_grid(root, config, student_job.method_cell(config, "brcd", 16))
    return config, root, config_file


def test_every_phase_of_a_real_job_is_timed(grid, capsys):
    config, root, config_file = grid
    student_job.main(["--config", str(config_file), "--workdir", str(root)])
    out = capsys.readouterr().out
    assert "GEMM (fp32, 1 thread" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("none ", "brcd "))}
    assert set(rows) == {"none", "brcd"}
    for row in rows.values():
        total, startup, *phases = map(float, row[1:8])
        assert total > 0 and startup > 0 and all(value >= 0 for value in phases)
        assert total == pytest.approx(startup + sum(phases), abs=0.04)  # seven values printed to 0.01
        assert row[-1].endswith("%")
    assert "share of all jobs' time: loading" in out
    assert not (root / "results/synthetic/16/student").exists()  # the jobs write into a temporary folder


def test_head_work_counts_two_views_and_the_rotations(grid):
    config, *_ = grid
    assert student_job.method_cell(config, "brcd", 16).variant == "lambda1"  # the centre of its grid
    job = student_job.JobTime("kd", 16, 3.0, dict.fromkeys(student_job.PHASES, 0.5), 1.0)
    assert job.startup == pytest.approx(0.5)


def test_a_grid_without_teachers_names_the_command_that_builds_them(grid, tmp_path):
    config, _, config_file = grid
    with pytest.raises(SystemExit, match=r"not found.*--until encode_teacher cluster"):
        student_job.job_command(str(config_file), config, student_job.method_cell(config, "none", 16), tmp_path,
                                tmp_path / "out")
