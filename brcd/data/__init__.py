"""Datasets (a registry keyed by name) and the seeded split protocols of SPEC §5."""
from __future__ import annotations

from typing import Mapping

from brcd.data import cifar10, fashion_mnist, imagefolder, listfile, synthetic  # noqa: F401  (registration)
from brcd.data.base import DATASETS, ImageDataset

__all__ = ["DATASETS", "ImageDataset", "create_dataset"]


def create_dataset(name: str, options: Mapping | None = None) -> ImageDataset:
    """Build the dataset registered as ``name`` from its config entry ``options``."""
    return DATASETS.get(name)(dict(options or {}))
