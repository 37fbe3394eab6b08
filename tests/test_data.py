"""Dataset loaders on small files written in each dataset's real on-disk format."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest

from brcd.data import DATASETS, create_dataset
from brcd.data.fashion_mnist import DEBIAN_ROOT
from brcd.errors import ConfigError, DataError
from tests.conftest import write_idx


def test_registry_lists_all_loaders():
    assert {"cifar10", "fashion_mnist", "nuswide", "coco", "imagenet100", "synthetic"} <= set(DATASETS.names())


def test_unknown_dataset_names_allowed_values():
    with pytest.raises(ConfigError, match="unknown dataset 'mnist'.*allowed values: cifar10"):
        create_dataset("mnist", {})


def test_fashion_mnist_debian_layout(tiny_fashion_mnist):
    ds = create_dataset("fashion_mnist", {"root": str(tiny_fashion_mnist)})
    assert len(ds) == 90 and ds.num_classes == 10
    assert ds.partitions["train"].tolist() == list(range(60))
    assert ds.partitions["test"].tolist() == list(range(60, 90))
    img = ds.image(61)
    assert img.shape == (28, 28, 3) and img.dtype == np.uint8
    assert (img[..., 0] == img[..., 2]).all()  # grey replicated to RGB
    assert ds.labels[61].argmax() == 1 and ds.labels.sum(axis=1).tolist() == [1] * 90


def test_fashion_mnist_torchvision_layout(tmp_path, tiny_fashion_mnist):
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in tiny_fashion_mnist.iterdir():
        (raw / f.name).write_bytes(f.read_bytes())
    assert len(create_dataset("fashion_mnist", {"root": str(tmp_path / "tv")})) == 90


def test_fashion_mnist_missing_root_explains_fix(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        create_dataset("fashion_mnist", {"root": str(tmp_path / "nowhere")})


def test_fashion_mnist_missing_one_file(tiny_fashion_mnist):
    (tiny_fashion_mnist / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="lacks t10k-labels-idx1-ubyte.gz"):
        create_dataset("fashion_mnist", {"root": str(tiny_fashion_mnist)})


def test_fashion_mnist_truncated_file(tiny_fashion_mnist):
    path = tiny_fashion_mnist / "train-images-idx3-ubyte.gz"
    write_idx(path, np.zeros((60, 28, 28)))
    import gzip

    data = gzip.decompress(path.read_bytes())[:-5]
    path.write_bytes(gzip.compress(data))
    with pytest.raises(DataError, match="truncated"):
        create_dataset("fashion_mnist", {"root": str(tiny_fashion_mnist)})


@pytest.mark.skipif(not Path(DEBIAN_ROOT, "train-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    ds = create_dataset("fashion_mnist", {})
    assert len(ds.partitions["train"]) == 60000 and len(ds.partitions["test"]) == 10000
    assert ds.labels.sum(axis=0).tolist() == [7000] * 10  # balanced
    assert ds.labels[ds.partitions["test"]].sum(axis=0).tolist() == [1000] * 10
    assert ds.image(0).shape == (28, 28, 3)


def _write_cifar(root: Path, n_per_batch: int = 4, n_test: int = 6) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def dump(name, n, offset):
        batch = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": [(offset + k) % 10 for k in range(n)],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)

    for b in range(1, 6):
        dump(f"data_batch_{b}", n_per_batch, b * n_per_batch)
    dump("test_batch", n_test, 0)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": ["c%d" % k for k in range(10)]}, handle)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar10_real_format(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    _write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    # torchvision checks the official MD5s before unpickling; point them at our files.
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{b}", _md5(folder / f"data_batch_{b}")] for b in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": _md5(folder / "batches.meta")})
    ds = create_dataset("cifar10", {"root": str(tmp_path)})
    assert len(ds) == 26 and ds.num_classes == 10
    assert len(ds.partitions["train"]) == 20 and ds.partitions["test"][0] == 20
    assert ds.image(0).shape == (32, 32, 3)
    assert ds.labels[5].argmax() == 9  # data_batch_2, item 1: label (8 + 1) % 10

def test_cifar10_tampered_file_is_rejected(tmp_path):
    _write_cifar(tmp_path)  # our files do not match the official MD5s
    with pytest.raises(DataError, match="could not be read"):
        create_dataset("cifar10", {"root": str(tmp_path)})


def test_cifar10_missing_root(tmp_path):
    with pytest.raises(DataError, match="datasets.cifar10.root"):
        create_dataset("cifar10", {"root": str(tmp_path)})
    with pytest.raises(DataError, match="datasets.cifar10.root"):
        create_dataset("cifar10", {})


def _write_list_dataset(root: Path, n: int = 12, width: int = 21) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images" / "sub").mkdir(parents=True)
    lines = []
    for i in range(n):
        rel = f"images/sub/{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)).save(root / rel)
        labels = np.zeros(width, dtype=int)
        labels[i % width] = 1
        labels[(i + 3) % width] = 1
        lines.append(rel + " " + " ".join(map(str, labels)))
    (root / "database.txt").write_text("\n".join(lines[:8]) + "\n")
    (root / "test.txt").write_text("\n".join(lines[8:]) + "\n")


@pytest.mark.parametrize("name,width", [("nuswide", 21), ("coco", 80), ("imagenet100", 100)])
def test_list_file_datasets(tmp_path, name, width):
    _write_list_dataset(tmp_path, width=width)
    ds = create_dataset(name, {"root": str(tmp_path), "lists": ["database.txt", "test.txt"]})
    assert len(ds) == 12 and ds.num_classes == width
    assert ds.labels.sum(axis=1).tolist() == [2] * 12
    assert ds.image(3).shape == (23, 30, 3)
    assert ds.protocol == "pool"


def test_list_file_wrong_label_width(tmp_path):
    _write_list_dataset(tmp_path, width=20)
    with pytest.raises(DataError, match=r"database.txt:1: expected 21 labels.*found 20"):
        create_dataset("nuswide", {"root": str(tmp_path), "lists": "database.txt"})


def test_list_file_bad_label_value(tmp_path):
    _write_list_dataset(tmp_path)
    (tmp_path / "bad.txt").write_text("images/sub/000.jpg " + " ".join(["2"] * 21) + "\n")
    with pytest.raises(DataError, match="bad.txt:1: labels must be 0 or 1"):
        create_dataset("nuswide", {"root": str(tmp_path), "lists": "bad.txt"})


def test_list_file_missing_image(tmp_path):
    _write_list_dataset(tmp_path)
    (tmp_path / "images/sub/005.jpg").unlink()
    with pytest.raises(DataError, match="1 image.*missing.*005.jpg.*datasets.nuswide.root"):
        create_dataset("nuswide", {"root": str(tmp_path), "lists": ["database.txt"]})


def test_list_file_missing_list_and_root(tmp_path):
    with pytest.raises(DataError, match="datasets.coco.root"):
        create_dataset("coco", {"lists": "x.txt"})
    with pytest.raises(DataError, match="does not exist"):
        create_dataset("coco", {"root": str(tmp_path / "no"), "lists": "x.txt"})
    with pytest.raises(DataError, match="list file .*nope.txt not found.*datasets.coco.lists"):
        create_dataset("coco", {"root": str(tmp_path), "lists": "nope.txt"})


def test_synthetic_is_deterministic_and_class_structured():
    a = create_dataset("synthetic", {"train_size": 200, "test_size": 100, "image_size": 16})
    b = create_dataset("synthetic", {"train_size": 200, "test_size": 100, "image_size": 16})
    assert np.array_equal(a.image(7), b.image(7)) and np.array_equal(a.labels, b.labels)
    assert a.image(7).shape == (16, 16, 3)
    assert a.labels.sum(axis=0).tolist() == [30] * 10
    big = create_dataset("synthetic", {"image_size": 48})
    assert big.image(0).shape == (48, 48, 3)
    # Class structure: nearest-class-mean on raw pixels beats chance by far.
    train, test = a.partitions["train"], a.partitions["test"]
    x = np.stack([a.image(i) for i in range(len(a))]).reshape(len(a), -1).astype(float)
    y = a.labels.argmax(1)
    means = np.stack([x[train][y[train] == c].mean(0) for c in range(10)])
    pred = ((x[test][:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == y[test]).mean() > 0.5
    other_seed = create_dataset("synthetic", {"train_size": 200, "test_size": 100, "image_size": 16, "seed": 1})
    assert not np.array_equal(a.image(7), other_seed.image(7))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_list_file_corrupt_image_names_path_and_line(tmp_path, damage):
    _write_list_dataset(tmp_path)
    image = tmp_path / "images/sub/010.jpg"  # line 3 of test.txt
    data = image.read_bytes()
    image.write_bytes(b"this is not an image" if damage == "garbage" else data[: len(data) // 3])
    ds = create_dataset("nuswide", {"root": str(tmp_path), "lists": ["database.txt", "test.txt"]})
    assert ds.image(9).shape == (29, 30, 3)  # its neighbours decode
    with pytest.raises(DataError) as info:
        ds.image(10)
    message = str(info.value)
    assert f"image {image}" in message and "cannot be decoded" in message
    assert f"line 3 of list file {tmp_path / 'test.txt'}" in message
    assert "datasets.nuswide.root" in message and "`split` rule" in message
