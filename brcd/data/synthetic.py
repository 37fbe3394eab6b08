"""Synthetic images with real class structure, for tests and smoke runs.

Every class has its own colour palette, stripe orientation and stripe
frequency, and a class-specific blob; each image jitters all of them, moves
the blob and adds pixel noise, so classes overlap a little but are clearly
learnable. Images are generated on demand from (seed, index): any size, no
files, identical on every machine.
"""
from __future__ import annotations

import numpy as np

from brcd.data.base import DATASETS, ImageDataset, LabelsOnly, one_hot

DEFAULTS = {"num_classes": 10, "train_size": 2000, "test_size": 500, "image_size": 32, "seed": 0, "noise": 0.15}


def _layout(opts: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Class of every image and the train/test partitions (no pixels: cheap)."""
    n_train, n_test = int(opts["train_size"]), int(opts["test_size"])
    n = n_train + n_test
    targets = np.random.default_rng([int(opts["seed"]), 1]).permutation(np.arange(n) % int(opts["num_classes"]))
    return targets, {"train": np.arange(n_train), "test": np.arange(n_train, n)}


@DATASETS.register("synthetic")
class Synthetic(ImageDataset):
    name = "synthetic"
    protocol = "train_test"
    config_keys = {"num_classes": "classes", "train_size": "images in the train partition",
               "test_size": "images in the test partition", "image_size": "side in pixels",
               "seed": "generator seed", "noise": "pixel noise"}

    @classmethod
    def labels_only(cls, options):
        opts = {**DEFAULTS, **options}
        targets, partitions = _layout(opts)
        return LabelsOnly(cls.name, cls.protocol, one_hot(targets, int(opts["num_classes"])), partitions)

    def __init__(self, options: dict):
        opts = {**DEFAULTS, **{k: v for k, v in options.items() if k in DEFAULTS}}
        self.num_classes_ = int(opts["num_classes"])
        self.size = int(opts["image_size"])
        self.seed = int(opts["seed"])
        self.noise = float(opts["noise"])
        targets, self.partitions = _layout(opts)
        self.targets = targets
        self.labels = one_hot(targets, self.num_classes_)
        class_rng = np.random.default_rng([self.seed, 2])
        self.palette = class_rng.uniform(0.1, 0.9, size=(self.num_classes_, 2, 3))
        self.angle = np.linspace(0, np.pi, self.num_classes_, endpoint=False)
        self.freq = class_rng.uniform(1.5, 4.0, size=self.num_classes_)
        self.blob_radius = class_rng.uniform(0.15, 0.35, size=self.num_classes_)

    def image(self, index: int) -> np.ndarray:
        c = int(self.targets[index])
        rng = np.random.default_rng([self.seed, 3, int(index)])
        grid = (np.arange(self.size) + 0.5) / self.size
        y, x = np.meshgrid(grid, grid, indexing="ij")
        angle = self.angle[c] + rng.normal(0, 0.1)
        phase = rng.uniform(0, 2 * np.pi)
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * self.freq[c] * (x * np.cos(angle) + y * np.sin(angle)) + phase)
        low, high = self.palette[c]
        img = low + stripes[..., None] * (high - low)
        cy, cx = rng.uniform(0.3, 0.7, size=2)
        blob = ((y - cy) ** 2 + (x - cx) ** 2) < self.blob_radius[c] ** 2
        img[blob] = 1.0 - img[blob]
        img = img + rng.normal(0, self.noise, size=img.shape)
        return (np.clip(img, 0, 1) * 255).astype(np.uint8)
