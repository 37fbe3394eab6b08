"""CIFAR-10 through torchvision's dataset class (50,000 train + 10,000 test).

torchvision verifies the MD5 of every batch file against the official
checksums before it unpickles it, so only the genuine CIFAR-10 files are read.
Global index: the train set (0..49999), then the test set (50000..59999).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from brcd.data.base import DATASETS, ImageDataset, one_hot
from brcd.errors import DataError
from brcd.options import Flag, Options, Text

HOW_TO_GET = (
    "set `datasets.cifar10.root` to the folder that holds `cifar-10-batches-py` "
    "(the 'python version' from https://www.cs.toronto.edu/~kriz/cifar.html), "
    "or set `datasets.cifar10.download: true` on a machine with internet"
)


@DATASETS.register("cifar10")
class CIFAR10(ImageDataset):
    name = "cifar10"
    protocol = "train_test"
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    options = Options(root=Text(None, "folder holding cifar-10-batches-py"),
                      download=Flag(False, "let torchvision fetch it"))
    class_counts = {"train": (5000,) * 10, "test": (1000,) * 10}

    def __init__(self, options: dict):
        from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

        options = self.own_options(options)
        if not options["root"]:
            raise DataError(f"CIFAR-10 needs a data folder; {HOW_TO_GET}")
        root = Path(options["root"])
        download = options["download"]
        if not download and not (root / "cifar-10-batches-py").is_dir():
            raise DataError(f"CIFAR-10 not found: {root / 'cifar-10-batches-py'} does not exist; {HOW_TO_GET}")
        parts = {}
        try:
            for part, train in (("train", True), ("test", False)):
                parts[part] = TorchvisionCIFAR10(str(root), train=train, download=download)
        except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
            raise DataError(f"CIFAR-10 in {root} could not be read ({exc}); {HOW_TO_GET}") from exc
        except OSError as exc:  # download failed
            raise DataError(f"could not download CIFAR-10 into {root} ({exc}); {HOW_TO_GET}") from exc
        self._images = np.concatenate([parts["train"].data, parts["test"].data])
        targets = np.concatenate([parts["train"].targets, parts["test"].targets])
        self.labels = one_hot(targets, len(self.classes))
        n_train = len(parts["train"].data)
        self.partitions = {"train": np.arange(n_train), "test": np.arange(n_train, len(targets))}

    def image(self, index: int) -> np.ndarray:
        return np.ascontiguousarray(self._images[index])
