"""The uniform dataset interface: decoded RGB images plus multi-hot labels."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from brcd.registry import Registry

DATASETS: Registry = Registry("dataset", config_key="datasets")


class ImageDataset:
    """A labelled image collection addressed by a global integer index.

    Subclasses fill in ``labels`` (N x C uint8 multi-hot; single-label sets
    are one-hot), ``partitions`` (the source's own partitions, e.g. the
    official train and test sets, as index arrays) and :meth:`image`.
    ``protocol`` names the split protocol of SPEC §5 that applies.
    """

    name: str = "dataset"
    protocol: str = "train_test"
    labels: np.ndarray
    partitions: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.labels.shape[1])

    def image(self, index: int) -> np.ndarray:
        """The decoded image ``index`` as an (H, W, 3) uint8 array."""
        raise NotImplementedError

    def images(self, indices) -> list[np.ndarray]:
        return [self.image(int(i)) for i in indices]


def to_rgb(array: np.ndarray) -> np.ndarray:
    """Grey (H, W) or (H, W, 1) and RGBA images -> contiguous (H, W, 3) uint8."""
    array = np.asarray(array, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def one_hot(targets: np.ndarray, num_classes: int) -> np.ndarray:
    targets = np.asarray(targets, dtype=np.int64)
    labels = np.zeros((len(targets), num_classes), dtype=np.uint8)
    labels[np.arange(len(targets)), targets] = 1
    return labels


def create_dataset(name: str, options: Mapping | None = None) -> ImageDataset:
    """Build the dataset registered as ``name`` from its config entry ``options``."""
    import brcd.data  # noqa: F401  (registers the built-in loaders)

    return DATASETS.get(name)(dict(options or {}))
