"""Shared test fixtures: small on-disk datasets in their real formats."""
from __future__ import annotations

import gzip
import os
import struct
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
