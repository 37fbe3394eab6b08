"""Datasets (a registry keyed by name) and the seeded split protocols of SPEC §5."""
from brcd.data import cifar10, fashion_mnist, listfile, synthetic  # noqa: F401  (registration)
from brcd.data.base import DATASETS, ImageDataset, create_dataset

__all__ = ["DATASETS", "ImageDataset", "create_dataset"]
