"""benchmarks/student_lr.py: the students' lr chosen on validation from no-KD runs of the tuning seed."""
from __future__ import annotations


import pytest
import yaml

from brcd.config import REPO_ROOT, validate_schema
from brcd.errors import DataError
from tests.conftest import built_benchmark_grid, load_benchmark

student_lr = load_benchmark("student_lr")


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A working copy whose results/ holds what the workflow builds before the students (tiny config)."""
    root = tmp_path_factory.mktemp("student_lr")
    config = validate_schema(yaml.safe_load((REPO_ROOT / "config" / "test.yaml").read_text()))
    for role in ("teacher", "student"):
        config["train"][role].update(epochs=6, min_epochs=3, eval_every=3, patience=1)
    config_file = built_benchmark_grid(root, config, student_lr.no_kd_cell(config, 16))
    return config, root, config_file


def test_each_lr_is_one_no_kd_run_of_the_tuning_seed(grid, torch_threads):
    config, root, _ = grid
    cell = student_lr.no_kd_cell(config, 16)
    assert (cell.kd, cell.variant, cell.seed) == ("none", "lambda0", config["seeds"][0])
    trials = student_lr.lr_trials(config, cell, [0.003, 0.03], root)
    assert [t.lr for t in trials] == [0.003, 0.03]
    for trial in trials:
        assert 0.0 < trial.val_map <= 1.0
        assert trial.best_epoch <= trial.epochs <= config["train"]["student"]["epochs"]
    assert trials[0].val_map != trials[1].val_map  # the lr reached the optimiser
    # the same lr again: the same run, bit for bit (seeded, inputs shared)
    again = student_lr.lr_trials(config, cell, [0.003], root)
    assert again[0] == trials[0]
    assert not (root / "results/synthetic/16/student").exists()  # nothing written into the grid's results


def test_the_best_mean_validation_map_is_chosen():
    trial = student_lr.Trial
    trials = [trial(0.001, 16, 0.60, 36, 40), trial(0.001, 64, 0.65, 48, 56),
              trial(0.008, 16, 0.62, 20, 28), trial(0.008, 64, 0.64, 20, 28),
              trial(0.016, 16, 0.70, 12, 20), trial(0.016, 64, 0.50, 12, 20)]
    assert student_lr.choose(trials) == 0.008  # mean 0.63 against 0.625 and 0.60
    assert student_lr.choose(trials[:2] + [trial(0.004, 16, 0.65, 1, 1), trial(0.004, 64, 0.60, 1, 1)]) == 0.001
    lines = student_lr.table(trials).splitlines()
    assert len(lines) == 4 and lines[2].startswith("0.008") and lines[2].split()[-1] == "0.6300"


def test_cli_prints_the_table_and_the_choice(grid, capsys):
    _, root, config_file = grid
    student_lr.main(["--config", str(config_file), "--workdir", str(root), "--lr", "0.003", "0.03",
                     "--threads", "1"])
    out = capsys.readouterr().out
    assert "no KD, seed 0" in out and "\n0.003 " in out and "\n0.03 " in out
    means = {float(line.split()[0]): float(line.split()[-1]) for line in out.splitlines() if line.startswith("0.0")}
    assert set(means) == {0.003, 0.03}
    assert f"chosen: lr {max(means, key=means.get):g} (best mean validation mAP)" in out  # the table's best


def test_missing_teachers_name_the_command_that_builds_them(grid, tmp_path):
    config, _, _ = grid
    with pytest.raises(DataError, match=r"split\.parquet.*not found.*snakemake --cores N results/.*--configfile CONFIG.*--until encode_teacher cluster"):
        student_lr.lr_trials(config, student_lr.no_kd_cell(config, 16), [0.003], tmp_path)
