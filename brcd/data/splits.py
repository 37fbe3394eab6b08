"""Seeded split protocols of SPEC §5 and the ``split.parquet`` file.

Splits: ``train`` (images for training the hashing heads), ``query``,
``val`` (model selection; always disjoint from ``query``) and ``database``.
``train`` is always a subset of ``database``, as in the published protocols.

Sizes come from the dataset's config entry: ``train_per_class`` or
``train``, ``query_per_class`` or ``query``, ``val`` and ``database``
(``database: all`` or omitted = everything the protocol allows).
"""
from __future__ import annotations

import os
from typing import Callable, Mapping

import numpy as np
import pyarrow as pa

from brcd.data.base import ImageDataset
from brcd.errors import ConfigError, DataError
from brcd.io import check_metadata, read_parquet, stable_hash, write_parquet
from brcd.registry import Registry

SPLITS = ("train", "query", "val", "database")
PROTOCOLS: Registry[Callable] = Registry("split protocol", config_key="protocol")


def _too_large(key: str, wanted: int, available: int, what: str) -> ConfigError:
    return ConfigError(
        f"`{key}` asks for {wanted} images but only {available} {what} are available; "
        f"lower `{key}` to at most {available}"
    )


def _sample(rng: np.random.Generator, pool: np.ndarray, n: int, key: str, what: str) -> np.ndarray:
    if n > len(pool):
        raise _too_large(key, n, len(pool), what)
    return np.sort(rng.choice(pool, size=n, replace=False))


def _sample_per_class(rng, pool, labels, per_class: int, key: str, what: str) -> np.ndarray:
    """``per_class`` images for each class, in class order, never reusing an image.

    With multi-hot labels an image counts for the class it was drawn for.
    """
    chosen: list[np.ndarray] = []
    available = np.ones(len(pool), dtype=bool)
    for c in range(labels.shape[1]):
        candidates = np.flatnonzero(available & (labels[pool, c] > 0))
        if len(candidates) < per_class:
            raise ConfigError(
                f"`{key}` asks for {per_class} images of class {c} but only {len(candidates)} {what} "
                f"of that class are left; lower `{key}` to at most {len(candidates)}"
            )
        pick = rng.choice(candidates, size=per_class, replace=False)
        available[pick] = False
        chosen.append(pool[pick])
    return np.sort(np.concatenate(chosen))


def _draw(rng, pool, labels, sizes, name, prefix, what):
    per_class = sizes.get(f"{name}_per_class")
    if per_class is not None:
        return _sample_per_class(rng, pool, labels, int(per_class), f"{prefix}.{name}_per_class", what)
    if sizes.get(name) is None:
        raise ConfigError(f"`{prefix}` needs `{name}` or `{name}_per_class` (the size of the {name} split)")
    return _sample(rng, pool, int(sizes[name]), f"{prefix}.{name}", what)


def _database(rng, pool, sizes, prefix, what):
    size = sizes.get("database", "all")
    if size in (None, "all") or int(size) == len(pool):
        return np.sort(pool)
    return _sample(rng, pool, int(size), f"{prefix}.database", what)


@PROTOCOLS.register("train_test")
def train_test_protocol(ds: ImageDataset, sizes: Mapping, rng: np.random.Generator, prefix: str) -> dict:
    """CIFAR-10 / Fashion-MNIST: query and val from the test set, database from
    the train set, train drawn from the database."""
    test, train = ds.partitions["test"], ds.partitions["train"]
    query = _draw(rng, test, ds.labels, sizes, "query", prefix, "test images")
    val = _draw(rng, np.setdiff1d(test, query), ds.labels, sizes, "val", prefix, "test images not in the query split")
    database = _database(rng, train, sizes, prefix, "train images")
    training = _draw(rng, database, ds.labels, sizes, "train", prefix, "database images")
    return {"train": training, "query": query, "val": val, "database": database}


@PROTOCOLS.register("pool")
def pool_protocol(ds: ImageDataset, sizes: Mapping, rng: np.random.Generator, prefix: str) -> dict:
    """NUS-WIDE / MS-COCO / ImageNet-100: query and val carved from the pool of
    labelled images, the database from the rest, train drawn from the database."""
    pool = ds.partitions["all"]
    labelled = pool[ds.labels[pool].sum(axis=1) > 0]  # unlabelled images cannot be judged relevant
    query = _draw(rng, labelled, ds.labels, sizes, "query", prefix, "labelled images")
    rest = np.setdiff1d(labelled, query)
    val = _draw(rng, rest, ds.labels, sizes, "val", prefix, "images left after the query split")
    database = _database(rng, np.setdiff1d(rest, val), sizes, prefix, "images left after query and val")
    training = _draw(rng, database, ds.labels, sizes, "train", prefix, "database images")
    return {"train": training, "query": query, "val": val, "database": database}


def make_splits(ds: ImageDataset, sizes: Mapping, seed: int) -> dict[str, np.ndarray]:
    """Draw the splits of ``ds`` with ``np.random.default_rng(seed)``."""
    prefix = f"datasets.{ds.name}"
    rng = np.random.default_rng(int(seed))
    splits = PROTOCOLS.get(sizes.get("protocol", ds.protocol))(ds, sizes, rng, prefix)
    if np.intersect1d(splits["query"], splits["val"]).size:
        raise AssertionError("query and val splits overlap")
    # queries and validation images are ranked against the database: K cannot exceed it
    if sizes.get("topk") is not None and int(sizes["topk"]) > len(splits["database"]):
        raise _too_large(f"{prefix}.topk", int(sizes["topk"]), len(splits["database"]), "database images")
    return splits


SIZE_KEYS = ("train", "train_per_class", "query", "query_per_class", "val", "database", "protocol")


def write_splits(path: str | os.PathLike, ds: ImageDataset, sizes: Mapping, seed: int) -> dict[str, np.ndarray]:
    splits = make_splits(ds, sizes, seed)
    index = np.concatenate([splits[name] for name in SPLITS])
    names = np.concatenate([[name] * len(splits[name]) for name in SPLITS])
    labels = ds.labels[index]
    table = pa.table({
        "index": pa.array(index.astype(np.int64)),
        "split": pa.array(names, type=pa.string()),
        "labels": pa.FixedSizeListArray.from_arrays(pa.array(labels.reshape(-1), type=pa.uint8()), ds.num_classes),
    })
    metadata = {
        "dataset": ds.name,
        "seed": int(seed),
        "protocol": sizes.get("protocol", ds.protocol),
        "sizes": {k: sizes[k] for k in SIZE_KEYS if k in sizes},
        "counts": {name: int(len(splits[name])) for name in SPLITS},
        "num_images": len(ds),
        "num_classes": ds.num_classes,
    }
    write_parquet(path, table, metadata)
    return splits


def draw_of(options: Mapping, seed: int) -> dict:
    """What identifies the draw a dataset entry asks for, as a split file's metadata records it."""
    return {"seed": int(seed), "sizes": {key: options[key] for key in SIZE_KEYS if key in options}}


class Splits:
    """A loaded ``split.parquet``: index arrays per split plus labels by index."""

    def __init__(self, path: str | os.PathLike):
        table, self.metadata = read_parquet(path, "split file", columns=("index", "split", "labels"))
        self.path = path
        index = table.column("index").to_numpy()
        split = np.asarray(table.column("split").to_pylist(), dtype=object)
        width = self.metadata["num_classes"]
        labels = table.column("labels").combine_chunks().flatten().to_numpy().reshape(-1, width)
        self.indices = {name: index[split == name] for name in SPLITS}
        self._labels = dict(zip(index.tolist(), labels))
        for name in SPLITS:
            if len(self.indices[name]) == 0:
                raise DataError(f"{path} has an empty {name!r} split; rebuild it with `brcd split`")

    @property
    def dataset(self) -> str:
        return self.metadata["dataset"]

    def labels(self, indices) -> np.ndarray:
        """Multi-hot labels of the given dataset indices."""
        try:
            return np.stack([self._labels[int(i)] for i in indices])
        except KeyError as exc:
            raise DataError(f"index {exc.args[0]} has no labels in {self.path}; is it from another split file?") from None

    def check_config(self, options: Mapping, seed: int) -> None:
        """The file must be the draw the config asks for (same seed and sizes)."""
        found = {"seed": self.metadata.get("seed"), "sizes": self.metadata.get("sizes")}
        check_metadata(found, draw_of(options, seed), f"split file {self.path}",
                       "Rebuild it with the `split` rule (`brcd split`) for the current config.")

    @property
    def fingerprint(self) -> str:
        """Hash of the split membership: identifies this exact draw in other files' metadata."""
        return stable_hash({name: idx.tolist() for name, idx in self.indices.items()})

    def all_indices(self) -> np.ndarray:
        """Every dataset index that some split uses, sorted."""
        return np.unique(np.concatenate(list(self.indices.values())))
