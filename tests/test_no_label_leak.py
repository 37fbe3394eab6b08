"""No label reaches any distillation loss.

The public reference code draws CRD/PACKD negatives (and PACKD's extra
positives) from other / the same classes with the ground-truth labels: a label
leak in an unsupervised benchmark. Here a student's training step must not
depend on labels at all. Every registered method is trained twice on a tiny
grid: once with the true split file, once with a copy whose labels are
scrambled (the label vectors permuted over the images, consistently in every
row, so a training image's label is wrong wherever it is read). Validation
keeps scoring on the true labels in both runs -- model selection is the one
legitimate use of labels. The two runs must give bit-identical losses and
heads.

In bank mode the split file is the only place a student run could read labels
from: the scrambled run also fails if the dataset itself is opened.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

import brcd.distill.train_student as train_student_module
from brcd.cells import Cell
from brcd.config import REPO_ROOT, validate_schema
from brcd.data.splits import Splits
from brcd.distill import KD_LOSSES
from brcd.train import split_validator
from tests.conftest import build_teacher_grid, rewrite_split_labels

TEACHER = Cell("synthetic", 16, "cibhash", "tteacher", 0)
SIZES = {"num_classes": 4, "train_size": 160, "test_size": 80, "image_size": 16, "train_per_class": 8,
         "query": 20, "val": 20, "database": 80, "topk": 20}


def student(kd: str) -> Cell:
    return Cell("synthetic", 16, "cibhash", "tteacher", 0, "tstudent", kd)


def scramble_labels(source, target, seed: int = 0) -> None:
    """Copy a split file with each image's labels replaced by another image's (same rows, same metadata)."""
    def relabel(index, split, labels):
        by_index = dict(zip(index.tolist(), labels))  # a training image is also a database row: one label each
        images = np.unique(index)
        donor = dict(zip(images.tolist(), np.random.default_rng(seed).permutation(images).tolist()))
        return np.stack([by_index[donor[i]] for i in index.tolist()])

    rewrite_split_labels(source, target, relabel)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """True and scrambled split files, both banks, a trained teacher and its clusters, all tiny."""
    root = tmp_path_factory.mktemp("label_leak")
    config = validate_schema(yaml.safe_load((REPO_ROOT / "config" / "test.yaml").read_text()))
    config["datasets"]["synthetic"] = dict(SIZES)
    config["views"] = 2
    config["train"]["teacher"].update(epochs=8, min_epochs=8, eval_every=4, batch_size=16)
    config["train"]["student"].update(epochs=2, min_epochs=2, eval_every=1, batch_size=16)
    build_teacher_grid(root, config)
    scramble_labels(root / "split.parquet", root / "scrambled.parquet")
    return config, root


def _train(config, root, kd, split, out):
    return train_student_module.train_student(
        config, student(kd), str(root / split), str(root / "teacher.pt"), str(out), None,
        student_bank=str(root / "tstudent"), teacher_bank=str(root / "tteacher"),
        clusters_path=str(root / "clusters.parquet"))


def test_the_scrambled_split_hides_the_labels_but_not_the_images(grid):
    """The control: the copy is the same draw, and anything scoring with its labels would see the change."""
    config, root = grid
    true, scrambled = Splits(root / "split.parquet"), Splits(root / "scrambled.parquet")
    assert scrambled.fingerprint == true.fingerprint  # same images in every split: accepted by banks and teacher
    for name in ("train", "val", "database"):
        moved = (true.labels(true.indices[name]) != scrambled.labels(true.indices[name])).any(axis=1)
        assert moved.mean() > 0.5, name
    from brcd.checkpoint import load_checkpoint, load_head
    from brcd.features import create_source

    head = load_head(load_checkpoint(root / "teacher.pt"), "teacher")
    source = create_source(config, "synthetic", "tteacher", true, "cpu", str(root / "tteacher"))
    scores = [split_validator(source, splits, SIZES["topk"], {"sym": None})(head)["sym"]
              for splits in (true, scrambled)]
    assert abs(scores[0] - scores[1]) > 0.02, scores


@pytest.mark.parametrize("kd", KD_LOSSES.names())
def test_students_trained_on_scrambled_labels_are_bit_identical(grid, tmp_path, monkeypatch, kd):
    config, root = grid
    honest = _train(config, root, kd, "split.parquet", tmp_path / "true.pt")

    true_splits = Splits(root / "split.parquet")
    real_validator = train_student_module.split_validator

    def validator_on_true_labels(source, splits, topk, databases):
        assert splits.fingerprint == true_splits.fingerprint
        return real_validator(source, true_splits, topk, databases)

    def no_dataset(*args, **kwargs):
        raise AssertionError("a bank-mode student run opened the dataset (and with it the labels)")

    monkeypatch.setattr(train_student_module, "split_validator", validator_on_true_labels)
    monkeypatch.setattr("brcd.features.create_dataset", no_dataset)
    blind = _train(config, root, kd, "scrambled.parquet", tmp_path / "scrambled.pt")

    assert blind["history"] == honest["history"]  # every loss term of every epoch, exactly
    assert set(blind["best"]) == set(honest["best"]) == {"sym", "asym"}
    for selection, best in honest["best"].items():
        other = blind["best"][selection]
        assert (other["epoch"], other["map"]) == (best["epoch"], best["map"])
        assert other["state"].keys() == best["state"].keys()
        assert all(torch.equal(other["state"][k], best["state"][k]) for k in best["state"]), selection
