"""The uniform dataset interface: decoded RGB images plus multi-hot labels."""
from __future__ import annotations

from typing import ClassVar, Mapping

import numpy as np

from brcd.options import Options
from brcd.registry import Registry

DATASETS: Registry = Registry("dataset", config_key="datasets")


#: keys every dataset entry accepts: the split sizes (SPEC §5), ``topk`` and the split protocol
SPLIT_KEYS = ("train", "train_per_class", "query", "query_per_class", "val", "database", "topk", "protocol")


class ImageDataset:
    """A labelled image collection addressed by a global integer index.

    Subclasses fill in ``labels`` (N x C uint8 multi-hot; single-label sets
    are one-hot), ``partitions`` (the source's own partitions, e.g. the
    official train and test sets, as index arrays) and :meth:`image`.
    ``protocol`` names the split protocol of SPEC §5 that applies.

    For the checks that run before any job starts, a dataset declares the
    config keys its entry accepts besides :data:`SPLIT_KEYS`, with their types,
    ranges and defaults (``options``), may check its files (:meth:`check_files`)
    and, when its sizes are fixed, gives the images per class of each partition
    (``class_counts``, or
    :meth:`labels_only` when they depend on options).
    """

    name: str = "dataset"
    protocol: str = "train_test"
    #: config keys of this dataset's entry besides SPLIT_KEYS, typed (brcd.options)
    options: ClassVar[Options] = Options()
    #: partition -> images per class, when known without reading the data (None: only after reading it)
    class_counts: Mapping[str, tuple[int, ...]] | None = None
    labels: np.ndarray
    partitions: Mapping[str, np.ndarray]

    @classmethod
    def own_options(cls, entry: Mapping) -> dict:
        """This dataset's own keys of its config entry ``entry``, typed, with their defaults."""
        return cls.options.resolve({key: entry[key] for key in cls.options if key in entry}, f"datasets.{cls.name}")

    @classmethod
    def check_files(cls, options: Mapping) -> None:
        """Check the dataset's files before any job starts (missing, damaged, not the expected ones),
        raising :class:`~brcd.errors.DataError` that names the file and the fix; by default nothing
        (the loader checks its files when a job reads them)."""

    @classmethod
    def labels_only(cls, options: Mapping) -> "ImageDataset | None":
        """A stand-in with this dataset's partitions and labels but no images, built
        without reading any file, so split sizes can be checked before any job
        starts; None when they are only known after reading the data (the split
        job checks them then)."""
        if cls.class_counts is None:
            return None
        num_classes = len(next(iter(cls.class_counts.values())))
        partitions, targets, start = {}, [], 0
        for part, counts in cls.class_counts.items():
            part_targets = np.repeat(np.arange(num_classes), counts)
            partitions[part] = np.arange(start, start + len(part_targets))
            targets.append(part_targets)
            start += len(part_targets)
        return LabelsOnly(cls.name, cls.protocol, one_hot(np.concatenate(targets), num_classes), partitions)

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


class LabelsOnly(ImageDataset):
    """Partitions and labels without images (:meth:`ImageDataset.labels_only`)."""

    def __init__(self, name: str, protocol: str, labels: np.ndarray, partitions: Mapping[str, np.ndarray]):
        self.name, self.protocol, self.labels, self.partitions = name, protocol, labels, dict(partitions)

    def image(self, index: int) -> np.ndarray:
        raise TypeError(f"{self.name}: a labels-only stand-in has no images")


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
