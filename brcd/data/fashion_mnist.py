"""Fashion-MNIST: 60,000 train + 10,000 test 28x28 grey images, 10 classes.

Read from the idx ``.gz`` files of Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``), from torchvision's on-disk layout
(``<root>/FashionMNIST/raw``), or downloaded by torchvision's class when
``download: true`` and the network allows. Global index: the train set first
(0..59999), then the test set (60000..69999).
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from brcd.data.base import DATASETS, ImageDataset, one_hot, to_rgb
from brcd.errors import DataError
from brcd.options import Flag, Options, Text

DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
HOW_TO_GET = (
    "install Debian's package (`apt-get update && apt-get install dataset-fashion-mnist`, "
    f"which puts it in {DEBIAN_ROOT}), or set `datasets.fashion_mnist.root` to a folder with "
    "the four idx files, or set `datasets.fashion_mnist.download: true` on a machine with internet"
)


def read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (optionally gzipped): magic 0x0000{type}{ndim}, dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte idx file (bad magic number); {HOW_TO_GET}")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise DataError(f"{path} is truncated: header says {dims}, found {len(data) - offset} bytes of data")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "FashionMNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).exists():
                return folder / name
    return None


def _load_local(root: Path) -> dict[str, np.ndarray] | None:
    paths = {key: _find(root, stem) for key, stem in FILES.items()}
    if all(p is None for p in paths.values()):
        return None
    missing = [FILES[k] + ".gz" for k, p in paths.items() if p is None]
    if missing:
        raise DataError(f"Fashion-MNIST folder {root} lacks {', '.join(missing)}; {HOW_TO_GET}")
    return {key: read_idx(path) for key, path in paths.items()}


def _download(root: Path) -> dict[str, np.ndarray]:
    from torchvision.datasets import FashionMNIST

    arrays = {}
    try:
        for part, train in (("train", True), ("test", False)):
            ds = FashionMNIST(str(root), train=train, download=True)
            arrays[f"{part}_images"] = ds.data.numpy()
            arrays[f"{part}_labels"] = ds.targets.numpy().astype(np.uint8)
    except Exception as exc:  # network errors come in many types
        raise DataError(f"could not download Fashion-MNIST into {root} ({exc}); {HOW_TO_GET}") from exc
    return arrays


@DATASETS.register("fashion_mnist")
class FashionMNIST(ImageDataset):
    name = "fashion_mnist"
    protocol = "train_test"
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    options = Options(root=Text(None, "folder with the four idx files (default: Debian's)"),
                      download=Flag(False, "let torchvision fetch it"))
    class_counts = {"train": (6000,) * 10, "test": (1000,) * 10}

    def __init__(self, options: dict):
        options = self.own_options(options)
        root = Path(options["root"] or DEBIAN_ROOT)
        arrays = _load_local(root)
        if arrays is None:
            if not options["download"]:
                raise DataError(f"Fashion-MNIST not found in {root} (`datasets.fashion_mnist.root`); {HOW_TO_GET}")
            arrays = _download(root)
        for part in ("train", "test"):
            if len(arrays[f"{part}_images"]) != len(arrays[f"{part}_labels"]):
                raise DataError(f"Fashion-MNIST {part} images and labels differ in count in {root}")
        self._images = np.concatenate([arrays["train_images"], arrays["test_images"]])
        targets = np.concatenate([arrays["train_labels"], arrays["test_labels"]])
        if targets.max() >= len(self.classes):
            raise DataError(f"Fashion-MNIST labels in {root} exceed 9; the label files are not Fashion-MNIST")
        self.labels = one_hot(targets, len(self.classes))
        n_train = len(arrays["train_images"])
        self.partitions = {"train": np.arange(n_train), "test": np.arange(n_train, len(targets))}

    def image(self, index: int) -> np.ndarray:
        return to_rgb(self._images[index])
