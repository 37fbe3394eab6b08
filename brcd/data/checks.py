"""Dataset entries of a grid config, checked before any job starts.

Every key of ``datasets.NAME`` must be one the dataset declares (its
``config_keys``) or a split key (:data:`~brcd.data.base.SPLIT_KEYS`), the
dataset's own file check must pass (:meth:`~brcd.data.base.ImageDataset.check_files`:
e.g. an image archive exists, has the expected sha256 and decodes), the
protocol must exist, and the split sizes and ``topk`` must fit the dataset.
Sizes are checked by drawing the splits on a labels-only stand-in of the
dataset (:meth:`~brcd.data.base.ImageDataset.labels_only`), so the message is
the split job's own: it names the key and the largest valid value. Datasets
whose sizes are only known after reading their files (the list-file datasets)
are checked by the split job, the first job of the grid, before anything else
reads them.
"""
from __future__ import annotations

import difflib
from typing import Mapping

from brcd.data.base import DATASETS, SPLIT_KEYS
from brcd.data.splits import PROTOCOLS, make_splits
from brcd.errors import ConfigError, DataError


def allowed_keys(name: str) -> list[str]:
    """Keys a ``datasets.NAME`` entry accepts."""
    return [*SPLIT_KEYS, *DATASETS.get(name).config_keys]


def check_dataset_keys(name: str, options: Mapping, source: str = "config") -> None:
    allowed = allowed_keys(name)
    for key in options:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            raise ConfigError(
                f"{source}: `datasets.{name}` has unknown key `{key}`{hint}; "
                f"a {name} entry accepts: {', '.join(allowed)}"
            )


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
