"""Backbone features: the ``bank`` feature store and the ``online`` path (SPEC §8).

Backbones are frozen, so nearly all compute is backbone forward passes. In
``bank`` mode ``brcd features`` runs a backbone once over

* the clean view of every image any split uses (``clean.npy``),
* ``views`` augmented views of every training image (``views.npy``), and
* the 4 rotations (0/90/180/270 degrees) of every training image's clean view,
  for SSKD (``rotations.npy``),

stored as float16 ``.npy`` files that training memory-maps. In ``online`` mode
the same :class:`FeatureSource` interface runs the backbone on fresh
augmentations at every step. Either way augmented view ``v`` of image ``i`` is
the same pixels for every backbone (``brcd.augment`` draws its parameters from
``(aug_seed, i, v)`` only), so teacher and student see the same view.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from brcd.config import backbone_options, dataset_options
from brcd.data import create_dataset
from brcd.data.splits import Splits
from brcd.errors import DataError
from brcd.io import check_metadata

log = logging.getLogger(__name__)
NUM_ROTATIONS = 4
BANK_FILES = ("clean.npy", "clean_index.npy", "train_index.npy", "views.npy", "rotations.npy", "meta.json")


def bank_metadata(config: dict, dataset: str, alias: str, splits: Splits) -> dict:
    """What identifies a bank: dataset, split draw, backbone, views, augmentation seed."""
    options = backbone_options(config, alias)
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

    def rotations(self, train_pos: np.ndarray) -> torch.Tensor:
        raise NotImplementedError


class BankSource(FeatureSource):
    """Reads a feature bank written by :func:`build_bank` (memory-mapped)."""

    def __init__(self, folder: str | os.PathLike, expected: dict, device="cpu"):
        folder = Path(folder)
        missing = [name for name in BANK_FILES if not (folder / name).exists()]
        if missing:
            raise DataError(f"feature bank {folder} is incomplete (missing {', '.join(missing)}); rebuild it with the `features` rule")
        self.meta = json.loads((folder / "meta.json").read_text())
        check_metadata(self.meta, expected, f"feature bank {folder}",
                       "Delete it and rebuild it with the `features` rule (`brcd features`) for this split and backbone.")
        self.device = torch.device(device)
        self._clean = np.load(folder / "clean.npy", mmap_mode="r")
        self._views = np.load(folder / "views.npy", mmap_mode="r")
        self._rotations = np.load(folder / "rotations.npy", mmap_mode="r")
        clean_index = np.load(folder / "clean_index.npy")
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
        return self._tensor(self._clean[np.asarray(rows, dtype=np.int64)])

    def views(self, train_pos, views):
        return self._tensor(self._views[np.asarray(train_pos), np.asarray(views)])

    def rotations(self, train_pos):
        return self._tensor(self._rotations[np.asarray(train_pos)])


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
    backbone = create_backbone(backbone_options(config, alias), alias)
    return OnlineSource(dataset, backbone, splits, int(config.get("aug_seed", 0)), device)


def build_bank(config: dict, dataset_name: str, alias: str, split_path: str, out: str | os.PathLike,
               device="cpu", batch_size: int = 256) -> Path:
    """Write the feature bank of (dataset, backbone) for the images of ``split_path``."""
    from brcd.models import create_backbone

    splits = Splits(split_path)
    splits.check_config(dataset_options(config, dataset_name), config.get("split_seed", 0))
    meta = bank_metadata(config, dataset_name, alias, splits)
    dataset = create_dataset(dataset_name, dataset_options(config, dataset_name))
    backbone = create_backbone(backbone_options(config, alias), alias).to(device)
    source = OnlineSource(dataset, backbone, splits, meta["aug_seed"], device)
    clean_index = splits.all_indices()
    train_index = splits.indices["train"]
    views = meta["views"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        dim = backbone.feature_dim
        clean = np.lib.format.open_memmap(tmp / "clean.npy", "w+", np.float16, (len(clean_index), dim))
        view_arr = np.lib.format.open_memmap(tmp / "views.npy", "w+", np.float16, (len(train_index), views, dim))
        rot_arr = np.lib.format.open_memmap(tmp / "rotations.npy", "w+", np.float16, (len(train_index), NUM_ROTATIONS, dim))
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
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
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
    build_bank(config, args.dataset, args.backbone, args.split, args.out, device, args.batch_size)
