"""Backbone features: the ``bank`` feature store and the ``online`` path (SPEC §8).

Backbones are frozen, so nearly all compute is backbone forward passes. In
``bank`` mode ``brcd features`` runs a backbone once over

* the clean view of every image any split uses (``clean.npy``),
* ``views`` augmented views of every training image (``views.npy``), and
* the 4 rotations (0/90/180/270 degrees) of every training image's clean view,
  for SSKD (``rotations.npy``),

stored as float16 ``.npy`` files that training memory-maps and reads into memory
as float32 once per job (:class:`BankSource`). In ``online`` mode
the same :class:`FeatureSource` interface runs the backbone on fresh
augmentations at every step. Either way augmented view ``v`` of image ``i`` is
the same pixels for every backbone (``brcd.augment`` draws its parameters from
``(aug_seed, i, v)`` only), so teacher and student see the same view.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from brcd.config import backbone_options, dataset_options
from brcd.data import create_dataset
from brcd.data.splits import Splits
from brcd.errors import DataError
from brcd.io import OutputError, check_metadata, format_bytes, free_bytes, is_disk_full, read_checked, rebuild_hint

log = logging.getLogger(__name__)
NUM_ROTATIONS = 4
BANK_FILES = ("clean.npy", "clean_index.npy", "train_index.npy", "views.npy", "rotations.npy", "meta.json")
#: a bank folder without a live writer older than this is stale (folders of the old unnamed layout only)
LEGACY_STALE_SECONDS = 3600


def bank_metadata(config: dict, dataset: str, alias: str, splits: Splits) -> dict:
    """What identifies a bank: dataset, split draw, backbone, views, augmentation seed."""
    options = backbone_options(config, alias, dataset)
    return {
        "dataset": dataset,
        "split": splits.fingerprint,
        "backbone": alias,
        "model": options["model"],
        "weights": options.get("weights", "default"),
        "input_size": options["input_size"],
        "head_input": options.get("head_input", "pooled"),
        "views": int(config["views"]),
        "aug_seed": int(config.get("aug_seed", 0)),
    }


class FeatureSource:
    """Features of one backbone for the images of one split draw.

    ``train_pos`` arguments are positions in ``splits.indices["train"]``
    (sorted dataset indices); ``indices`` arguments are dataset indices.
    """

    feature_dim: int
    num_views: int | None  # None: unlimited fresh views (online)

    def clean(self, indices: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def views(self, train_pos: np.ndarray, views: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def view_pairs(self, train_pos: np.ndarray, views_1: np.ndarray, views_2: np.ndarray) -> torch.Tensor:
        """Views ``views_1`` of the images at ``train_pos``, then views ``views_2`` of them (2B rows): what a
        training step feeds the head in one pass."""
        return torch.cat([self.views(train_pos, views_1), self.views(train_pos, views_2)])

    def rotations(self, train_pos: np.ndarray) -> torch.Tensor:
        raise NotImplementedError


class BankSource(FeatureSource):
    """Reads a feature bank written by :func:`build_bank`: its files memory-mapped, each array read into
    memory as float32 the first time a job asks for it (the same floats: float16 -> float32 is exact)."""

    def __init__(self, folder: str | os.PathLike, expected: dict, device="cpu"):
        folder = Path(folder)
        missing = [name for name in BANK_FILES if not (folder / name).exists()]
        if missing:
            raise DataError(f"feature bank {folder} is incomplete (missing {', '.join(missing)}); rebuild it with the `features` rule")
        fix = rebuild_hint(folder)

        def load(name: str, **kwargs):
            # never pickles: allow_pickle=False
            return read_checked(folder / name, lambda p: np.load(p, allow_pickle=False, **kwargs),
                                "feature bank file", fix)

        self.meta = read_checked(folder / "meta.json", lambda p: json.loads(p.read_text()), "feature bank file", fix)
        check_metadata(self.meta, expected, f"feature bank {folder}",
                       "Delete it and rebuild it with the `features` rule (`brcd features`) for this split and backbone.")
        self._hold(load("clean.npy", mmap_mode="r"), load("clean_index.npy"), load("views.npy", mmap_mode="r"),
                   load("rotations.npy", mmap_mode="r"), device)

    @classmethod
    def from_arrays(cls, clean: np.ndarray, clean_index: np.ndarray, views: np.ndarray, rotations: np.ndarray,
                    device="cpu") -> "BankSource":
        """A bank held in memory, without its files: the arrays :func:`build_bank` writes (``clean`` rows
        of the images ``clean_index``; ``views`` and ``rotations`` per training position), read as a
        student job reads a bank (``benchmarks/step_cost.py`` times a step on one)."""
        source = cls.__new__(cls)
        source.meta = {}
        source._hold(clean, clean_index, views, rotations, device)
        return source

    def _hold(self, clean, clean_index, views, rotations, device) -> None:
        self.device = torch.device(device)
        self._clean, self._views, self._rotations = clean, views, rotations
        self._clean_in_memory = self._views_in_memory = self._rotations_in_memory = None
        self._row = {int(i): r for r, i in enumerate(clean_index)}
        self.feature_dim = int(self._clean.shape[1])
        self.num_views = int(self._views.shape[1])

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(array, dtype=np.float32)).to(self.device)

    def clean(self, indices):
        try:
            rows = [self._row[int(i)] for i in indices]
        except KeyError as exc:
            raise DataError(f"image {exc.args[0]} is not in the feature bank; rebuild it for the current split") from None
        # the clean features are read into memory once (62,000 x 1,280 floats for the study: 317 MB): a
        # student job reads them for its validation data and again for every code file it writes, and a
        # gather from the memory map cost ~1.3 s each time (the same floats: float16 -> float32 is exact)
        if self._clean_in_memory is None:
            self._clean_in_memory = self._tensor(self._clean)
        return self._clean_in_memory[torch.as_tensor(np.asarray(rows, dtype=np.int64))]

    def _stored_rows(self, train_pos, views) -> torch.Tensor:
        """Rows of the stored views, (image, view) pairs numbered image-major as the bank stores them, on
        the bank's device (``index_select`` takes its index there). A view outside the stored ones would
        name another image's row, so it is refused as indexing (image, view) refused it."""
        views = np.asarray(views, dtype=np.int64)
        if views.size and (views.min() < 0 or views.max() >= self.num_views):
            raise IndexError(f"view {views.min() if views.min() < 0 else views.max()} is not one of the bank's "
                             f"{self.num_views} stored views")
        return torch.as_tensor(np.asarray(train_pos, dtype=np.int64) * self.num_views + views, device=self.device)

    def _view_rows(self, rows: torch.Tensor) -> torch.Tensor:
        # every training step reads two views of a batch: the stored views are read into memory once
        # (5,000 images x 8 views x 1,280 floats: 205 MB), so a step indexes a tensor instead of
        # gathering rows from the memory map (the same floats, a few times faster); one index_select
        # of whole rows costs about half of indexing (image, view) pairs, the same floats
        if self._views_in_memory is None:
            self._views_in_memory = self._tensor(self._views).flatten(0, 1)
        return self._views_in_memory.index_select(0, rows)

    def views(self, train_pos, views):
        return self._view_rows(self._stored_rows(train_pos, views))

    def view_pairs(self, train_pos, views_1, views_2):
        # one gather of both views' rows, into the 2B-row matrix the head takes (no concatenation)
        return self._view_rows(self._stored_rows(np.concatenate([train_pos, train_pos]),
                                                 np.concatenate([views_1, views_2])))

    def rotations(self, train_pos):
        # sskd reads the four rotations of every batch image each step: from memory after the first read
        # (5,000 images x 4 rotations x 1,280 floats: 102 MB), the same floats as from the memory map
        if self._rotations_in_memory is None:
            self._rotations_in_memory = self._tensor(self._rotations)
        return self._rotations_in_memory[torch.as_tensor(np.asarray(train_pos, dtype=np.int64))]


class OnlineSource(FeatureSource):
    """Runs the frozen backbone on the fly; clean-view features are cached."""

    num_views = None

    def __init__(self, dataset, backbone, splits: Splits, aug_seed: int, device="cpu"):
        self.dataset, self.backbone, self.aug_seed = dataset, backbone.to(device), aug_seed
        self.train_index = splits.indices["train"]
        self.device = torch.device(device)
        self.feature_dim = backbone.feature_dim
        self._cache: dict[int, torch.Tensor] = {}

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # not inference_mode: heads backpropagate through these tensors
            return self.backbone(batch.to(self.device)).float()

    def clean_uncached(self, indices) -> torch.Tensor:
        """Clean-view features computed now (the bank build stores them itself)."""
        from brcd.augment import clean_batch

        b = self.backbone
        return self._forward(clean_batch(self.dataset.images(indices), b.input_size, b.mean, b.std))

    def clean(self, indices):
        todo = [int(i) for i in indices if int(i) not in self._cache]
        for start in range(0, len(todo), 256):
            chunk = todo[start:start + 256]
            self._cache.update(zip(chunk, self.clean_uncached(chunk)))
        return torch.stack([self._cache[int(i)] for i in indices])

    def views(self, train_pos, views):
        from brcd.augment import augment_batch

        indices = self.train_index[np.asarray(train_pos)]
        images = self.dataset.images(indices)
        b = self.backbone
        return self._forward(augment_batch(images, self.aug_seed, indices, np.asarray(views), b.input_size, b.mean, b.std))

    def rotations(self, train_pos):
        indices = self.train_index[np.asarray(train_pos)]
        return self._forward(rotation_batch(self.dataset, indices, self.backbone)).view(len(indices), NUM_ROTATIONS, -1)


def rotation_batch(dataset, indices, backbone) -> torch.Tensor:
    """Clean views rotated by 0/90/180/270 degrees, image-major: (len(indices) * 4) x 3 x S x S."""
    from brcd.augment import rotated_batch

    images = dataset.images(indices)
    rotations = [rotated_batch(images, k, backbone.input_size, backbone.mean, backbone.std) for k in range(NUM_ROTATIONS)]
    return torch.stack(rotations, dim=1).flatten(0, 1)


def create_source(config: dict, dataset_name: str, alias: str, splits: Splits, device, bank: str | None = None) -> FeatureSource:
    """The feature source the config's ``mode`` asks for."""
    splits.check_config(dataset_options(config, dataset_name), config.get("split_seed", 0))
    if config["mode"] == "bank":
        if bank is None:
            raise DataError(f"mode `bank` needs the feature bank of backbone {alias!r}; build it with the `features` rule")
        return BankSource(bank, bank_metadata(config, dataset_name, alias, splits), device)
    from brcd.models import create_backbone

    dataset = create_dataset(dataset_name, dataset_options(config, dataset_name))
    backbone = create_backbone(backbone_options(config, alias, dataset_name), alias)
    return OnlineSource(dataset, backbone, splits, int(config.get("aug_seed", 0)), device)


# --------------------------------------------------------------------------- bank building

# A bank is built in a hidden folder next to it, ``.{name}.partial-{host}-{pid}-{random}``,
# then renamed into place. The host and PID say whose it is: a later build removes
# those of dead processes on this host (a job killed by SIGKILL, an out-of-memory kill
# or a power cut cannot clean up after itself).


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname() or "host")


def _work_prefix(out: Path, kind: str) -> str:
    return f".{out.name}.{kind}-{_host()}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _newest_mtime(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    times += [entry.stat().st_mtime for entry in folder.iterdir()]
    return max(times)


def stale_work_folders(out: str | os.PathLike) -> list[Path]:
    """Partial (or set-aside) folders of bank ``out`` whose writer is gone.

    Ours and stale: ``.{name}.partial-{host}-{pid}-*`` / ``.{name}.old-...`` of
    this host whose PID is no longer running; and folders of the older
    unnamed layout (``.{name}.XXXXXXXX``, as ``tempfile.mkdtemp`` names them)
    that hold nothing but bank files and were last written over
    :data:`LEGACY_STALE_SECONDS` ago.
    """
    out = Path(out)
    if not out.parent.is_dir():
        return []
    host = _host()
    named = re.compile(rf"^\.{re.escape(out.name)}\.(partial|old)-(?P<host>.+)-(?P<pid>\d+)-[a-z0-9_]+$")
    legacy = re.compile(rf"^\.{re.escape(out.name)}\.[a-z0-9_]{{8}}$")
    stale = []
    for entry in out.parent.iterdir():
        if not entry.is_dir() or entry.is_symlink():
            continue
        match = named.match(entry.name)
        try:
            if match:
                if match["host"] == host and not _pid_alive(int(match["pid"])):
                    stale.append(entry)
            elif legacy.match(entry.name):
                names = {child.name for child in entry.iterdir()}
                if names <= set(BANK_FILES) and time.time() - _newest_mtime(entry) > LEGACY_STALE_SECONDS:
                    stale.append(entry)
        except OSError:  # vanished or unreadable meanwhile: not ours to judge
            continue
    return sorted(stale)


def remove_stale_work_folders(out: str | os.PathLike) -> list[Path]:
    """Remove :func:`stale_work_folders` of ``out``; returns what was removed."""
    removed = []
    for folder in stale_work_folders(out):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            log.warning("removed %s, the partial feature bank of a job that was killed", folder)
            removed.append(folder)
    return removed


#: room allowed per bank file beyond its data: the .npy header (128 bytes), meta.json, a file-system block
FILE_OVERHEAD_BYTES = 4096


def bank_bytes(num_clean: int, num_train: int, views: int, dim: int) -> int:
    """The final size of a bank (an upper bound by a few KiB), known before anything is computed."""
    features = (num_clean + num_train * (views + NUM_ROTATIONS)) * dim * np.dtype(np.float16).itemsize
    indices = (num_clean + num_train) * np.dtype(np.int64).itemsize
    return int(features + indices + len(BANK_FILES) * FILE_OVERHEAD_BYTES)


def _shrink_hint(dataset_name: str, views: int) -> str:
    return (f"free some space, or shrink the bank: lower `views` (now {views}) or the split sizes "
            f"`datasets.{dataset_name}.train` / `train_per_class` (and `query`, `val`, `database`) in the config, "
            "or use `mode: online`, which stores no bank")


def check_bank_space(out: Path, needed: int, dataset_name: str, views: int, detail: str) -> None:
    """Raise :class:`OutputError` before any work if the device of ``out`` cannot hold the bank."""
    free = free_bytes(out.parent)
    if free is not None and free < needed:
        raise OutputError(
            f"feature bank {out} needs {needed} bytes ({format_bytes(needed)}: {detail}) but only {free} bytes "
            f"({format_bytes(free)}) are free on the device of {out.parent}; {_shrink_hint(dataset_name, views)}"
        )


def _preallocate(path: Path) -> None:
    """Reserve the disk blocks of a memory-mapped file now, so a full disk is an error here
    (ENOSPC) instead of a SIGBUS in the middle of writing features through the map."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # else: cannot reserve here
            raise
    finally:
        os.close(fd)


def _open_bank_array(path: Path, shape: tuple) -> np.memmap:
    array = np.lib.format.open_memmap(path, "w+", np.float16, shape)
    _preallocate(path)
    return array


def _make_work_folder(out: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=_work_prefix(out, "partial"), dir=out.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it owner-only; outputs are for sharing
    return tmp


def _replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished bank ``tmp`` onto ``out``; an existing bank is kept until the new one is in place."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=_work_prefix(out, "old"), dir=out.parent))
        os.replace(out, old)  # onto the empty folder just made
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_bank(config: dict, dataset_name: str, alias: str, split_path: str, out: str | os.PathLike,
               device="cpu", batch_size: int = 256) -> Path:
    """Write the feature bank of (dataset, backbone) for the images of ``split_path``.

    Before any backbone pass: partial banks of killed jobs are removed and the
    device must hold the whole bank (:class:`OutputError` otherwise). The bank
    is written to a partial folder, preallocated, and renamed into place; any
    failure removes the partial folder and leaves an existing bank as it was.
    """
    from brcd.models import create_backbone

    splits = Splits(split_path)
    splits.check_config(dataset_options(config, dataset_name), config.get("split_seed", 0))
    meta = bank_metadata(config, dataset_name, alias, splits)
    out = Path(out)
    clean_index = splits.all_indices()
    train_index = splits.indices["train"]
    views = meta["views"]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder of feature bank {out} ({exc.strerror or exc}); "
                          "make the results folder writable") from exc
    remove_stale_work_folders(out)
    dataset = create_dataset(dataset_name, dataset_options(config, dataset_name))
    backbone = create_backbone(backbone_options(config, alias, dataset_name), alias).to(device)
    dim = backbone.feature_dim
    needed = bank_bytes(len(clean_index), len(train_index), views, dim)
    detail = (f"{len(clean_index)} clean images + {len(train_index)} train images x ({views} views + "
              f"{NUM_ROTATIONS} rotations), {dim} float16 features each")
    check_bank_space(out, needed, dataset_name, views, detail)
    source = OnlineSource(dataset, backbone, splits, meta["aug_seed"], device)
    try:
        tmp = _make_work_folder(out)
    except OSError as exc:
        raise OutputError(f"cannot create a folder next to feature bank {out} ({exc.strerror or exc}); "
                          f"make {out.parent} writable") from exc
    try:
        clean = _open_bank_array(tmp / "clean.npy", (len(clean_index), dim))
        view_arr = _open_bank_array(tmp / "views.npy", (len(train_index), views, dim))
        rot_arr = _open_bank_array(tmp / "rotations.npy", (len(train_index), NUM_ROTATIONS, dim))
        total = len(clean_index) + len(train_index) * (views + NUM_ROTATIONS)
        with tqdm(total=total, desc=f"features {dataset_name}/{alias}", unit="img", mininterval=5) as bar:
            for start in range(0, len(clean_index), batch_size):
                chunk = clean_index[start:start + batch_size]
                clean[start:start + len(chunk)] = source.clean_uncached(chunk).cpu().numpy()
                bar.update(len(chunk))
            per_chunk = max(1, batch_size // views)
            all_views = np.arange(views)
            for start in range(0, len(train_index), per_chunk):
                pos = np.arange(start, min(start + per_chunk, len(train_index)))
                rep_pos, rep_view = np.repeat(pos, views), np.tile(all_views, len(pos))
                view_arr[pos] = source.views(rep_pos, rep_view).cpu().numpy().reshape(len(pos), views, dim)
                rot_arr[pos] = source.rotations(pos).cpu().numpy()
                bar.update(len(pos) * (views + NUM_ROTATIONS))
        for array in (clean, view_arr, rot_arr):
            array.flush()
        del clean, view_arr, rot_arr
        np.save(tmp / "clean_index.npy", clean_index.astype(np.int64))
        np.save(tmp / "train_index.npy", train_index.astype(np.int64))
        (tmp / "meta.json").write_text(json.dumps({**meta, "feature_dim": dim, "num_clean": len(clean_index),
                                                   "num_train": len(train_index)}, indent=2))
        _replace_folder(tmp, out)
    except OSError as exc:
        if is_disk_full(exc):
            shutil.rmtree(tmp, ignore_errors=True)
            free = free_bytes(out.parent)
            now_free = f", {free} bytes ({format_bytes(free)}) are free" if free is not None else ""
            raise OutputError(
                f"feature bank {out}: the disk filled up while writing it ({exc.strerror or exc}; the bank needs "
                f"{needed} bytes ({format_bytes(needed)}){now_free}); the partial bank was removed and nothing "
                f"was overwritten; {_shrink_hint(dataset_name, views)}"
            ) from exc
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("feature bank %s: %d clean, %d train x (%d views + %d rotations), dim %d",
             out, len(clean_index), len(train_index), views, NUM_ROTATIONS, dim)
    return out


def configure_parser(parser) -> None:
    from brcd.runtime import add_runtime_arguments

    parser.add_argument("--config", required=True, help="grid config YAML")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--backbone", required=True, help="backbone alias (a key of `backbones`)")
    parser.add_argument("--split", required=True, help="results/{dataset}/split.parquet")
    parser.add_argument("--out", required=True, help="bank folder, results/{dataset}/features/{backbone}")
    parser.add_argument("--batch-size", type=int, default=256)
    add_runtime_arguments(parser)


def run(args) -> None:
    from brcd.runtime import load_stage

    config, device = load_stage(args)
    # SIGTERM (Snakemake cancelling the job, a scheduler's time limit) ends the process
    # through SystemExit, so build_bank's clean-up runs and no partial bank is left.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        build_bank(config, args.dataset, args.backbone, args.split, args.out, device, args.batch_size)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum, frame):
    sys.exit(128 + signum)
