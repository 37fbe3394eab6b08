"""NUS-WIDE, MS-COCO and ImageNet-100 from the widely used hashing list files.

Each line of a list file is ``relative/path.jpg 0 1 0 ...``: an image path
relative to the image root, then the multi-hot label vector. Several list
files (e.g. ``database.txt`` and ``test.txt``) are concatenated in the order
given, forming one pool from which SPEC §5's protocol carves the splits.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from brcd.io import snakemake_command
from brcd.layout import SPLIT
from brcd.data.base import DATASETS, ImageDataset, to_rgb
from brcd.errors import DataError
from brcd.options import Int, Options, Text


def parse_list_file(path: Path, num_classes: int, key: str) -> tuple[list[str], np.ndarray]:
    """Read one list file, checking every line's label width and values."""
    paths, labels, _ = read_list_file(path, num_classes, key)
    return paths, labels


def read_list_file(path: Path, num_classes: int, key: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """:func:`parse_list_file` plus the line number of every entry (for messages about its image)."""
    if not path.is_file():
        raise DataError(f"list file {path} not found (config key `{key}`); point it at the dataset's list file")
    paths, rows, linenos = [], [], []
    with open(path) as handle:
        for lineno, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            labels = fields[1:]
            if len(labels) != num_classes:
                raise DataError(
                    f"{path}:{lineno}: expected {num_classes} labels after the image path, found {len(labels)} "
                    f"(set `{key.rsplit('.', 1)[0]}.num_classes` if this list has a different label width)"
                )
            if any(value not in ("0", "1") for value in labels):
                raise DataError(f"{path}:{lineno}: labels must be 0 or 1, got {' '.join(labels)}")
            paths.append(fields[0])
            rows.append([value == "1" for value in labels])
            linenos.append(lineno)
    if not paths:
        raise DataError(f"list file {path} has no entries (config key `{key}`)")
    return paths, np.asarray(rows, dtype=np.uint8), np.asarray(linenos, dtype=np.int64)


def list_file_options(num_classes: int) -> Options:
    """The keys of a list-file dataset's entry, with its label width as the default ``num_classes``."""
    return Options(root=Text(None, "image root"),
                   lists=Text(None, "list file(s), relative to root or absolute", several=True),
                   num_classes=Int(num_classes, "label width of the list files", minimum=1, maximum=100_000))


class ListFileDataset(ImageDataset):
    """Images under ``root`` listed, with labels, in one or more list files."""

    protocol = "pool"
    # class_counts stays None: the sizes are known once the list files are read (the split job checks them)

    def __init__(self, options: dict):
        prefix = f"datasets.{self.name}"
        options = self.own_options(options)
        root = options["root"]
        if not root:
            raise DataError(f"`{prefix}.root` is not set; set it to the folder the list file's image paths are relative to")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"image root {self.root} (`{prefix}.root`) does not exist")
        lists = options["lists"]
        if not lists:
            raise DataError(f"`{prefix}.lists` is not set; give the list file(s), e.g. [database.txt, test.txt]")
        if isinstance(lists, str):
            lists = [lists]
        num_classes = options["num_classes"]
        paths, labels, self.list_files, sources, lines = [], [], [], [], []
        for entry in lists:
            list_path = Path(entry) if os.path.isabs(entry) else self.root / entry
            p, l, n = read_list_file(list_path, num_classes, f"{prefix}.lists")
            paths += p
            labels.append(l)
            sources.append(np.full(len(p), len(self.list_files), dtype=np.int32))
            lines.append(n)
            self.list_files.append(list_path)
        missing = [p for p in paths if not (self.root / p).is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} image(s) named in `{prefix}.lists` are missing under {self.root}, "
                f"e.g. {missing[0]}; check `{prefix}.root`"
            )
        self.paths = paths
        self._source, self._line = np.concatenate(sources), np.concatenate(lines)  # where each entry is listed
        self.labels = np.concatenate(labels)
        self.partitions = {"all": np.arange(len(paths))}

    def listed_at(self, index: int) -> str:
        """Where image ``index`` is listed: ``line N of list file PATH``."""
        return f"line {int(self._line[index])} of list file {self.list_files[int(self._source[index])]}"

    def image(self, index: int) -> np.ndarray:
        from PIL import Image

        path = self.root / self.paths[index]
        try:
            with Image.open(path) as img:
                return to_rgb(np.asarray(img.convert("RGB")))
        # PIL reports undecodable files as UnidentifiedImageError / OSError (truncated data),
        # SyntaxError or ValueError (broken headers) and DecompressionBombError (absurd sizes).
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            split = SPLIT.format(dataset=self.name)
            raise DataError(
                f"image {path} ({self.listed_at(index)}) cannot be decoded ({type(exc).__name__}: {exc}); "
                f"replace it with an intact copy (re-extract the dataset under `datasets.{self.name}.root`), "
                "or delete that line from the list file and, since that renumbers the pool, rebuild the split "
                f"(`split` rule) and everything after it with `{snakemake_command(forcerun=split)}`"
            ) from None


@DATASETS.register("nuswide")
class NUSWIDE(ListFileDataset):
    name = "nuswide"
    options = list_file_options(21)


@DATASETS.register("coco")
class COCO(ListFileDataset):
    name = "coco"
    options = list_file_options(80)


@DATASETS.register("imagenet100")
class ImageNet100(ListFileDataset):
    name = "imagenet100"
    options = list_file_options(100)
