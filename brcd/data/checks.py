"""Dataset entries of a grid config, checked before any job starts.

Every key of ``datasets.NAME`` must be one the dataset declares (its
``options``, each of its declared type and range) or a split key
(:data:`~brcd.data.base.SPLIT_KEYS`, typed by the schema), the dataset's own
file check must pass (:meth:`~brcd.data.base.ImageDataset.check_files`: e.g.
an image archive exists, has the expected sha256 and decodes), the protocol
must exist, and the split sizes and ``topk`` must fit the dataset.
Sizes are checked by drawing the splits on a labels-only stand-in of the
dataset (:meth:`~brcd.data.base.ImageDataset.labels_only`), so the message is
the split job's own: it names the key and the largest valid value. Datasets
whose sizes are only known after reading their files (the list-file datasets)
are checked by the split job, the first job of the grid, before anything else
reads them.

:func:`known_train_size` tells the checks of other settings (BRCD's number of
clusters) how many training images the config draws, when that is known
without running the split job.
"""
from __future__ import annotations

from typing import Mapping, MutableMapping

from brcd.data.base import DATASETS, SPLIT_KEYS
from brcd.data.splits import PROTOCOLS, draw_of, make_splits
from brcd.errors import BrcdError, ConfigError, DataError
from brcd.io import read_parquet_metadata
from brcd.layout import SPLIT


def allowed_keys(name: str) -> list[str]:
    """Keys a ``datasets.NAME`` entry accepts."""
    return [*SPLIT_KEYS, *DATASETS.get(name).options]


def check_dataset_keys(name: str, options: MutableMapping, source: str = "config") -> None:
    """Every key is one the entry accepts, and the dataset's own keys have their declared types and
    ranges (their typed values are written back: ``"4"`` from ``--config`` becomes 4)."""
    declared = DATASETS.get(name).options
    try:
        declared.unknown(options, f"datasets.{name}", allowed_keys(name), noun="key")
        options.update(declared.parse({key: options[key] for key in declared if key in options}, f"datasets.{name}"))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def check_dataset_files(name: str, options: Mapping, source: str = "config") -> None:
    try:
        DATASETS.get(name).check_files(options)
    except (ConfigError, DataError) as exc:
        raise type(exc)(f"{source}: {exc}") from None


def check_dataset_sizes(name: str, options: Mapping, split_seed: int, source: str = "config") -> None:
    protocol = options.get("protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        raise ConfigError(f"{source}: `datasets.{name}.protocol` is {protocol!r}; "
                          f"allowed values: {', '.join(PROTOCOLS.names())}")
    stand_in = DATASETS.get(name).labels_only(options)
    if stand_in is None:
        return
    try:
        make_splits(stand_in, options, split_seed)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except KeyError as exc:  # the protocol reads a partition this dataset does not have
        raise ConfigError(
            f"{source}: `datasets.{name}.protocol` {protocol!r} needs a partition {exc} that {name} does not have "
            f"(it has {', '.join(stand_in.partitions)}); remove `protocol` to use {name}'s own ({stand_in.protocol})"
        ) from None


def check_dataset_entries(config: Mapping, source: str = "config") -> None:
    """Keys, files, protocol and sizes of every dataset entry (names were checked against the registry)."""
    for name, options in config.get("datasets", {}).items():
        if name not in DATASETS:
            continue
        check_dataset_keys(name, options, source)
        check_dataset_files(name, options, source)
        check_dataset_sizes(name, options, int(config.get("split_seed", 0)), source)


def known_train_size(name: str, options: Mapping, split_seed: int) -> int | None:
    """The training images of the split the config draws for dataset ``name``: from the sizes the
    dataset declares, else from its split file (``results/{dataset}/split.parquet`` under the working
    directory) when that holds this very draw; None when only the split job can tell."""
    stand_in = DATASETS.get(name).labels_only(options)
    if stand_in is not None:
        return len(make_splits(stand_in, options, split_seed)["train"])
    try:
        metadata = read_parquet_metadata(SPLIT.format(dataset=name), "split file")
    except BrcdError:  # none yet, or damaged: the split job draws (and checks) it
        return None
    same_draw = {key: metadata.get(key) for key in ("seed", "sizes")} == draw_of(options, split_seed)
    train = metadata.get("counts", {}).get("train") if same_draw else None
    return train if isinstance(train, int) else None
