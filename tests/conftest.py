"""Shared test fixtures: small on-disk datasets in their real formats, a trained tiny teacher, the tiny
grid of config/test.yaml built once per test session, and Snakemake run in the test's own process."""
from __future__ import annotations

import gzip
import os
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
#: the committed reports the tests check (the demo's and the study's, their tables, the two-path comparison):
#: in a folder no run writes, so that a user's `make demo` (which writes reports/) cannot change them
#: (docs/outputs.md, "Reference reports")
REFERENCE = REPO / "reference"


def job_stats(output: str) -> dict[str, int]:
    """The 'Job stats' table Snakemake prints before running (or in a dry run): rule -> count."""
    import re

    table = output.split("Job stats:")[1].split("\n\n")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an unsigned-byte idx file (gzipped when the name ends in .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as handle:
        handle.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


@pytest.fixture
def tiny_fashion_mnist(tmp_path) -> Path:
    """A Fashion-MNIST folder in Debian's layout: 60 train + 30 test images."""
    rng = np.random.default_rng(0)
    root = tmp_path / "fmnist"
    root.mkdir()
    for prefix, n in (("train", 60), ("t10k", 30)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


@pytest.fixture
def torch_threads():
    import torch

    torch.set_num_threads(1)
    yield


# ----------------------------------------------------------------------------- a trained tiny teacher

#: the teacher cell of every tiny grid built by :func:`build_teacher_grid`
TINY_TEACHER_CELL = ("synthetic", 16, "cibhash", "tteacher", 0)


def build_teacher_grid(root: Path, config: dict, clusters: int = 3) -> None:
    """What a student needs, in ``root``: split.parquet, both feature banks, a trained teacher
    (teacher.pt), its codes (teacher.parquet), its logits of the stored views (teacher_logits.npz) and
    clusters (clusters.parquet), from ``config``
    (config/test.yaml with a test's own sizes and budgets)."""
    import torch

    from brcd.cells import Cell
    from brcd.cluster import build_clusters, cluster_settings, write_clusters
    from brcd.codes import read_codes
    from brcd.data import create_dataset
    from brcd.data.splits import write_splits
    from brcd.encode import encode_model
    from brcd.features import build_bank
    from brcd.train import train_teacher

    torch.set_num_threads(1)
    teacher = Cell(*TINY_TEACHER_CELL)
    split = str(root / "split.parquet")
    write_splits(split, create_dataset("synthetic", config["datasets"]["synthetic"]), config["datasets"]["synthetic"],
                 seed=0)
    for alias in ("tteacher", "tstudent"):
        build_bank(config, "synthetic", alias, split, root / alias)
    train_teacher(config, teacher, split, str(root / "teacher.pt"), None, str(root / "tteacher"))
    encode_model(config, teacher, split, str(root / "teacher.pt"), {"teacher": str(root / "teacher.parquet")},
                 bank=str(root / "tteacher"), logits_path=str(root / "teacher_logits.npz"))
    train = read_codes(root / "teacher.parquet").select("train")
    built = build_clusters(train.codes(), train.index, cluster_settings({"clusters": clusters}), seed=0)
    built.metadata.update({"dataset": "synthetic", "bits": 16, "teacher": teacher.model, "teacher_seed": 0,
                           "teacher_config_hash": teacher.config_hash(config)})
    write_clusters(root / "clusters.parquet", built)


def link_built_grid(root: Path, cell) -> None:
    """Link what :func:`build_teacher_grid` made in ``root / "built"`` to where the workflow's layout
    puts the files a student job of ``cell`` reads (brcd.workflow.student_job_inputs): a grid as the
    benchmarks find it after `snakemake --until encode_teacher cluster`."""
    import os

    from brcd import layout

    teacher = cell.teacher_cell().parameters()
    links = {layout.SPLIT.format(dataset=cell.dataset): "split.parquet",
             layout.TEACHER_MODEL.format(**teacher): "teacher.pt",
             layout.TEACHER_CODES.format(**teacher): "teacher.parquet",
             layout.TEACHER_LOGITS.format(**teacher): "teacher_logits.npz",
             layout.CLUSTERS.format(**teacher): "clusters.parquet",
             layout.FEATURES.format(dataset=cell.dataset, backbone=cell.teacher): cell.teacher,
             layout.FEATURES.format(dataset=cell.dataset, backbone=cell.student): cell.student}
    for path, built in links.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(root / "built" / built, root / path)


def built_benchmark_grid(root: Path, config: dict, cell) -> Path:
    """A working copy whose results/ holds what the workflow builds before the students of ``config``
    (:func:`build_teacher_grid` in ``root / "built"``, linked for ``cell``: :func:`link_built_grid`),
    as the benchmarks find it; returns the config written to ``root / "grid.yaml"``."""
    import yaml

    build_teacher_grid(root / "built", config)
    link_built_grid(root, cell)
    config_file = root / "grid.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return config_file


def load_benchmark(name: str):
    """``benchmarks/{name}.py`` as a module (the scripts are not a package), registered in
    ``sys.modules``, where its dataclasses look their module up."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def rewrite_split_labels(source, target, relabel) -> None:
    """Copy a split file with other labels: ``relabel(index, split, labels)`` -> new labels (one row per
    row of the file). Membership, and so the split's fingerprint, stays the same."""
    import pyarrow as pa

    from brcd.io import read_parquet, write_parquet

    table, metadata = read_parquet(source, "split file")
    width = metadata["num_classes"]
    labels = table.column("labels").combine_chunks().flatten().to_numpy().reshape(-1, width)
    new = relabel(table.column("index").to_numpy(), table.column("split").to_numpy(zero_copy_only=False), labels)
    column = pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(new, dtype=np.uint8).reshape(-1)), width)
    write_parquet(target, table.set_column(table.column_names.index("labels"), "labels", column), metadata)


# ----------------------------------------------------------------------------- Snakemake in this process

SNAKEFILE = REPO / "Snakefile"


@dataclass(frozen=True)
class SnakemakeRun:
    """What a Snakemake command line did: its exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def snakemake_here(workdir: Path, *args: str) -> SnakemakeRun:
    """``snakemake -s Snakefile --directory workdir ARGS`` run in this process: Snakemake's own command
    line (``snakemake.cli.main``, what the ``snakemake`` script and ``python -m snakemake`` run), so the
    Snakefile is parsed and checked, the DAG planned and any jobs run exactly as from a shell. What a fresh
    process adds is importing Snakemake, torch and timm again (~4 s a command): tests that need a fresh
    process (another interpreter, a documented command as written) start one themselves.
    Afterwards the working directory, the environment (the Snakefile puts this interpreter's folder on
    PATH) and sys.path are as before."""
    import contextlib
    import io

    from snakemake.cli import main

    cwd, environ, path = os.getcwd(), dict(os.environ), list(sys.path)
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main(["-s", str(SNAKEFILE), "--directory", str(workdir), *args])
        code = 0
    except SystemExit as exit_:
        code = 0 if exit_.code is None else exit_.code if isinstance(exit_.code, int) else 1
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)
        sys.path[:] = path
    return SnakemakeRun(code, stdout.getvalue(), stderr.getvalue())


# ----------------------------------------------------------------------------- the tiny grid, built once

def _shared_folder(tmp_path_factory) -> Path:
    """A folder every process of this test session sees: pytest's temporary folder of this session, or
    under pytest-xdist the one its workers' folders share."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def built_tiny_grid(tmp_path_factory) -> Path:
    """config/test.yaml's tiny grid, built end to end by Snakemake once per test session, with the
    `make demo` recipe as the documentation shows it (tests/test_readme.py: ``make_demo_here``), in a
    working directory laid out like the repository. Under pytest-xdist the first worker to need it
    builds it and the others wait for it. Never change it: take a copy (:func:`copy_tiny_grid`)."""
    import fcntl

    from tests.test_readme import make_demo_here

    shared = _shared_folder(tmp_path_factory)
    workdir, built = shared / "tiny-grid", shared / "tiny-grid.built"
    with open(shared / "tiny-grid.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not built.exists():
            shutil.rmtree(workdir, ignore_errors=True)  # a build that failed in another worker
            workdir.mkdir()
            make_demo_here(workdir)
            built.touch()
    return workdir


def copy_tiny_grid(built: Path, target: Path) -> Path:
    """A copy of the built tiny grid (its results, reports, logs and Snakemake's records in .snakemake/,
    with their modification times, so that Snakemake finds it up to date; links stay links) in
    ``target``, for a test to change."""
    shutil.copytree(built, target, symlinks=True)
    return target


# ----------------------------------------------------------------------------- under pytest-xdist

#: the test modules that take longest (`pytest --durations`: the Slurm cluster and its runs, the documented
#: commands, the workflow's runs, a run killed and resumed), started first when `make test` spreads whole modules over workers
#: (pytest-xdist, --dist loadfile), so that none of them is left to run alone at the end
SLOWEST_MODULES = ("test_slurm.py", "test_readme.py", "test_workflow.py", "test_resume.py")


def pytest_collection_modifyitems(config, items):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # one process: the order of the files
    rank = {name: i for i, name in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: within a module, as written
