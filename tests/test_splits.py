"""Split protocols (SPEC §5): determinism, disjointness, sizes, per-class counts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brcd.data import create_dataset
from brcd.data.fashion_mnist import DEBIAN_ROOT
from brcd.data.splits import Splits, make_splits, write_splits
from brcd.errors import ConfigError
from brcd.io import read_parquet_metadata

SIZES = {"train_per_class": 10, "query": 50, "val": 40, "database": 300}


@pytest.fixture(scope="module")
def synthetic():
    return create_dataset("synthetic", {"train_size": 500, "test_size": 120, "image_size": 8})


def _check_train_test_protocol(ds, splits, sizes):
    test, train_part = set(ds.partitions["test"].tolist()), set(ds.partitions["train"].tolist())
    assert len(splits["query"]) == sizes["query"] and len(splits["val"]) == sizes["val"]
    assert not set(splits["query"]) & set(splits["val"])
    assert set(splits["query"]) <= test and set(splits["val"]) <= test
    assert set(splits["database"]) <= train_part and len(splits["database"]) == sizes["database"]
    assert set(splits["train"]) <= set(splits["database"])
    counts = ds.labels[splits["train"]].sum(axis=0)
    assert counts.tolist() == [sizes["train_per_class"]] * ds.num_classes
    for idx in splits.values():
        assert len(np.unique(idx)) == len(idx) and (np.diff(idx) > 0).all()


def test_train_test_protocol(synthetic):
    _check_train_test_protocol(synthetic, make_splits(synthetic, SIZES, seed=0), SIZES)


def test_same_seed_identical_file_different_seed_different_draw(synthetic, tmp_path):
    write_splits(tmp_path / "a.parquet", synthetic, SIZES, seed=3)
    write_splits(tmp_path / "b.parquet", synthetic, SIZES, seed=3)
    write_splits(tmp_path / "c.parquet", synthetic, SIZES, seed=4)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    a, c = Splits(tmp_path / "a.parquet"), Splits(tmp_path / "c.parquet")
    assert not np.array_equal(a.indices["query"], c.indices["query"])
    assert not np.array_equal(a.indices["train"], c.indices["train"])


def test_split_file_round_trip(synthetic, tmp_path):
    splits = write_splits(tmp_path / "s.parquet", synthetic, SIZES, seed=0)
    loaded = Splits(tmp_path / "s.parquet")
    for name, idx in splits.items():
        assert np.array_equal(loaded.indices[name], idx)
    q = loaded.indices["query"]
    assert np.array_equal(loaded.labels(q), synthetic.labels[q])
    meta = read_parquet_metadata(tmp_path / "s.parquet")
    assert meta["seed"] == 0 and meta["protocol"] == "train_test" and meta["dataset"] == "synthetic"
    assert meta["sizes"] == SIZES and meta["counts"]["train"] == 100


def test_database_all(synthetic):
    splits = make_splits(synthetic, {**SIZES, "database": "all"}, seed=0)
    assert np.array_equal(splits["database"], synthetic.partitions["train"])


@pytest.mark.parametrize("key,value,match", [
    ("query", 121, r"`datasets.synthetic.query` asks for 121 images but only 120 test images"),
    ("val", 80, r"`datasets.synthetic.val` asks for 80 .* only 70 test images not in the query split"),
    ("database", 501, r"`datasets.synthetic.database` asks for 501 .* only 500 train images"),
    ("train_per_class", 31, r"`datasets.synthetic.train_per_class` asks for 31 images of class \d but only \d+ database images"),
])
def test_sizes_too_large_name_the_key(synthetic, key, value, match):
    with pytest.raises(ConfigError, match=match):
        make_splits(synthetic, {**SIZES, key: value}, seed=0)


def test_missing_size_key(synthetic):
    with pytest.raises(ConfigError, match="needs `query` or `query_per_class`"):
        make_splits(synthetic, {"train_per_class": 1, "val": 1}, seed=0)


class MultiLabelPool:
    """A pool dataset like NUS-WIDE: multi-hot labels, one partition."""

    name = "nuswide"
    protocol = "pool"

    def __init__(self, n=600, classes=5, seed=0):
        rng = np.random.default_rng(seed)
        self.labels = (rng.random((n, classes)) < 0.3).astype(np.uint8)
        self.labels[:20] = 0  # unlabelled images never become queries
        self.partitions = {"all": np.arange(n)}
        self.num_classes = classes


def test_pool_protocol_multilabel():
    ds = MultiLabelPool()
    sizes = {"query_per_class": 10, "val": 40, "train": 100, "database": "all"}
    splits = make_splits(ds, sizes, seed=0)
    q, v, db, tr = (set(splits[k].tolist()) for k in ("query", "val", "database", "train"))
    assert len(q) == 50 and len(v) == 40 and len(tr) == 100
    assert not (q & v) and not (q & db) and not (v & db) and tr <= db
    labelled = set(np.flatnonzero(ds.labels.sum(axis=1) > 0).tolist())
    assert q | v | db == labelled and not (q & set(range(20)))
    # every class got its 10 queries
    assert (ds.labels[splits["query"]].sum(axis=0) >= 10).all()


@pytest.mark.skipif(not Path(DEBIAN_ROOT, "train-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed")
def test_demo_protocol_on_real_fashion_mnist():
    ds = create_dataset("fashion_mnist", {})
    sizes = {"train_per_class": 200, "query": 500, "val": 500, "database": 10000}
    _check_train_test_protocol(ds, make_splits(ds, sizes, seed=0), sizes)
