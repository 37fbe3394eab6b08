"""benchmarks/kd_scale.py: ‖∇L_hash‖ / ‖∇L_kd‖ per method at initialisation and the λ grids it suggests."""
from __future__ import annotations

import math

import pytest
import yaml

from brcd.config import REPO_ROOT, validate_schema
from brcd.errors import DataError
from tests.conftest import built_benchmark_grid, load_benchmark

kd_scale = load_benchmark("kd_scale")


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A working copy whose results/ holds what the workflow builds before the students (tiny config)."""
    root = tmp_path_factory.mktemp("kd_scale")
    config = validate_schema(yaml.safe_load((REPO_ROOT / "config" / "test.yaml").read_text()))
    config["bits"] = [16]
    for role in ("teacher", "student"):
        config["train"][role].update(epochs=3, min_epochs=3, eval_every=3, patience=1)
    config_file = built_benchmark_grid(root, config, kd_scale.student_cell(config, "brcd", 16))
    return config, root, config_file


def test_ratio_is_the_two_gradient_norms_of_the_starting_head(grid, torch_threads):
    config, root, _ = grid
    scales = {}
    for kd in ("sp", "brcd"):
        cell = kd_scale.student_cell(config, kd, 16)
        scales[kd] = kd_scale.measure(config, cell, root)
        assert scales[kd].grad_hash > 0 and scales[kd].grad_kd > 0
        assert scales[kd].ratio == pytest.approx(scales[kd].grad_hash / scales[kd].grad_kd)
        assert kd_scale.measure(config, cell, root) == scales[kd]  # seeded: the same numbers again
    assert scales["sp"].grad_hash == scales["brcd"].grad_hash  # the same starting head and batch
    # sp's batch-Gram loss pulls far less than L_hash at λ = 1 (issue 27), BRCD's contrastive loss about as much
    assert scales["sp"].ratio > 10 * scales["brcd"].ratio
    assert not (root / "results/synthetic/16/student").exists()  # nothing written into the grid's results


def test_suggested_grids_are_centred_on_the_published_weight_or_the_ratio():
    assert kd_scale.one_digit(123.0) == 100.0 and kd_scale.one_digit(0.37) == 0.4 and kd_scale.one_digit(2600) == 3000
    assert kd_scale.suggested_grid(3000.0) == [300.0, 3000.0, 30000.0]
    # a measured ratio outside the published grid widens it by decades until it holds the ratio
    assert kd_scale.suggested_grid(3000.0, ratio=120.0) == [30.0, 300.0, 3000.0, 30000.0]
    assert kd_scale.suggested_grid(30000.0, ratio=2800.0) == [300.0, 3000.0, 30000.0, 300000.0]
    assert kd_scale.suggested_grid(1.0, ratio=2.0) == [0.1, 1.0, 10.0]  # inside: unchanged
    scale = kd_scale.Scale
    scales = [scale("sp", 16, 1.0, 1 / 150), scale("sp", 64, 1.0, 1 / 100), scale("kd", 16, 2.0, 0.5),
              scale("kd", 64, 2.0, 0.25)]
    got = kd_scale.suggestions(scales)
    assert got["sp"][:2] == (3000.0, "published")
    assert got["kd"] == (6.0, "ratio", [0.6, 6.0, 60.0])  # geometric mean of 4 and 8 = 5.66 -> 6
    for centre, _, grid in got.values():
        assert min(grid) <= centre / 10 and max(grid) >= centre * 10  # at least 1/10 .. 10x
    assert math.isinf(scale("x", 16, 1.0, 0.0).ratio)


def test_cli_prints_the_table_and_the_grids(grid, capsys):
    _, root, config_file = grid
    kd_scale.main(["--config", str(config_file), "--workdir", str(root), "--kd", "sp", "kd", "--threads", "1"])
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith(("sp ", "kd "))]
    assert [r[0] for r in rows] == ["sp", "kd", "sp", "kd"]
    assert rows[2][2] == "published" and rows[3][2] == "ratio"


def test_missing_teachers_name_the_command_that_builds_them(grid, tmp_path):
    config, _, _ = grid
    with pytest.raises(DataError, match=r"split\.parquet.*not found.*snakemake --cores N results/.*--configfile CONFIG.*--until encode_teacher cluster"):
        kd_scale.measure(config, kd_scale.student_cell(config, "sp", 16), tmp_path)
