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
from brcd.options import MAX_SEED, Int, Number, Options

#: the largest partition and class count: a synthetic set is for tests and smoke runs, and its labels
#: (images x classes bytes) are allocated when the config is checked
MAX_IMAGES, MAX_CLASSES = 1_000_000, 1000


def _layout(opts: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Class of every image and the train/test partitions (no pixels: cheap)."""
    n_train, n_test = opts["train_size"], opts["test_size"]
    n = n_train + n_test
    targets = np.random.default_rng([opts["seed"], 1]).permutation(np.arange(n) % opts["num_classes"])
    return targets, {"train": np.arange(n_train), "test": np.arange(n_train, n)}


@DATASETS.register("synthetic")
class Synthetic(ImageDataset):
    name = "synthetic"
    protocol = "train_test"
    options = Options(num_classes=Int(10, "classes", minimum=1, maximum=MAX_CLASSES),
                      train_size=Int(2000, "images in the train partition", minimum=1, maximum=MAX_IMAGES),
                      test_size=Int(500, "images in the test partition", minimum=1, maximum=MAX_IMAGES),
                      image_size=Int(32, "side in pixels", minimum=1, maximum=1024),
                      seed=Int(0, "generator seed", minimum=0, maximum=MAX_SEED),
                      noise=Number(0.15, "pixel noise", minimum=0))

    @classmethod
    def labels_only(cls, options):
        opts = cls.own_options(options)
        targets, partitions = _layout(opts)
        return LabelsOnly(cls.name, cls.protocol, one_hot(targets, opts["num_classes"]), partitions)

    def __init__(self, options: dict):
        opts = self.own_options(options)
        self.num_classes_ = opts["num_classes"]
        self.size = opts["image_size"]
        self.seed = opts["seed"]
        self.noise = opts["noise"]
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
