"""No label reaches any distillation loss.

The public reference code draws CRD/PACKD negatives (and PACKD's extra
positives) from other / the same classes with the ground-truth labels: a label
leak in an unsupervised benchmark. Here a student's training step must not
depend on labels at all. Every registered method is trained twice on a tiny
grid: once with the true labels, once with the labels scrambled at *every*
place they exist -- the split file (the label vectors permuted over the
images, consistently in every row) and the dataset object (any instance of
the dataset class, however it is built: its ``labels``, ``targets`` and
``labels_only`` are permuted, while its images stay the true ones). Validation
keeps scoring on the true labels in both runs -- model selection is the one
legitimate use of labels. The two runs must give bit-identical losses and
heads.

Both execution modes (``bank``, and ``online``, which opens the dataset for
its pixels), the defaults of every method and the non-default options that
change what a method reads (``packd`` ``pos_k > 0`` and ``views: both``,
``crcd`` anchors, ``sskd`` ``ss_ratio``, frozen embeddings). The positive
controls: two deliberately leaking losses (``crd`` with class-conditional
negatives, labels read from the run's split or from the dataset object) that
the same comparison must catch.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import yaml

import brcd.distill.train_student as train_student_module
from brcd.cells import Cell
from brcd.config import REPO_ROOT, validate_schema
from brcd.data.base import one_hot
from brcd.data.splits import Splits
from brcd.data.synthetic import Synthetic
from brcd.distill import KD_LOSSES
from brcd.distill.crd import CRD
from brcd.train import split_validator
from tests.conftest import build_teacher_grid, rewrite_split_labels

TEACHER = Cell("synthetic", 16, "cibhash", "tteacher", 0)
SIZES = {"num_classes": 4, "train_size": 160, "test_size": 80, "image_size": 16, "train_per_class": 8,
         "query": 20, "val": 20, "database": 80, "topk": 20}
#: non-default options that change what a method reads or how it samples
OPTIONS = {
    "packd": {"pos_k": 2, "views": "both"},
    "crcd": {"anchors": 4, "self_pairs": False},
    "sskd": {"ss_ratio": 0.75},
    "crd": {"embeddings": "frozen", "negatives": 16},
    "rkd": {"features": "logits", "views": "both"},
}
LEAKS = ("leak_split", "leak_dataset")


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


def scramble_dataset_labels(monkeypatch, seed: int = 1) -> list:
    """Every ``Synthetic`` built from now on (by any route) carries permuted labels and targets; its images
    stay the true ones (they are drawn from the true class, which only the patched ``image`` knows).
    Returns the list of the instances built, filled as they are."""
    init, image, labels_only = Synthetic.__init__, Synthetic.image, Synthetic.labels_only.__func__
    true_targets: dict[int, np.ndarray] = {}
    built = []

    def scrambled_init(self, options):
        init(self, options)
        true_targets[id(self)] = self.targets
        self.targets = np.random.default_rng(seed).permutation(self.targets)
        self.labels = one_hot(self.targets, self.num_classes_)
        built.append(self)

    def true_image(self, index):
        shown = self.targets
        self.targets = true_targets.get(id(self), shown)  # an instance built before the patch is true already
        try:
            return image(self, index)
        finally:
            self.targets = shown

    def scrambled_labels_only(cls, options):
        stand_in = labels_only(cls, options)
        stand_in.labels = np.random.default_rng(seed).permutation(stand_in.labels)
        return stand_in

    monkeypatch.setattr(Synthetic, "__init__", scrambled_init)
    monkeypatch.setattr(Synthetic, "image", true_image)
    monkeypatch.setattr(Synthetic, "labels_only", classmethod(scrambled_labels_only))
    return built


def run_splits() -> Splits:
    """The Splits object of the student run that is building the calling loss (a leak's way in)."""
    frame = sys._getframe(1)
    while frame is not None:
        found = frame.f_locals.get("splits")
        if isinstance(found, Splits):
            return found
        frame = frame.f_back
    raise AssertionError("no Splits object up the stack")


class ClassNegativesCRD(CRD):
    """A deliberately leaking ``crd``: negatives from the anchor's *other* classes, as the reference's
    data loader draws them, with the labels read from the run's split file or from the dataset object."""

    source = "split"

    def __init__(self, name, bits, num_train, options, clusters=None):
        super().__init__(name, bits, num_train, options, clusters)
        splits = run_splits()
        train = splits.indices["train"]
        if self.source == "split":
            labels = splits.labels(train)
        else:  # the dataset object: membership from the split file, labels from the dataset
            from brcd.data import create_dataset

            labels = create_dataset("synthetic", SIZES).labels[train]
        self.classes = torch.as_tensor(labels.argmax(axis=1))

    def embed(self, batch):
        v_s, v_t, contrast = super().embed(batch)
        classes = self.classes[batch.index]
        others = [torch.nonzero(self.classes != c).flatten() for c in classes.tolist()]
        picks = torch.stack([o[torch.randint(0, len(o), (contrast.shape[1] - 1,))] for o in others])
        return v_s, v_t, torch.cat([contrast[:, :1], picks], dim=1)


class DatasetNegativesCRD(ClassNegativesCRD):
    source = "dataset"


@pytest.fixture(scope="module", autouse=True)
def leaking_losses():
    """Register the positive controls for this module only."""
    for name, cls in zip(LEAKS, (ClassNegativesCRD, DatasetNegativesCRD)):
        KD_LOSSES.register(name)(cls)
    yield
    for name in LEAKS:
        del KD_LOSSES._entries[name]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """True and scrambled split files, both banks, a trained teacher and its clusters, all tiny."""
    root = tmp_path_factory.mktemp("label_leak")
    config = validate_schema(yaml.safe_load((REPO_ROOT / "config" / "test.yaml").read_text()))
    config["datasets"]["synthetic"] = dict(SIZES)
    config["views"] = 2
    config["train"]["teacher"].update(epochs=8, min_epochs=8, eval_every=4, batch_size=16)
    config["train"]["student"].update(epochs=2, min_epochs=2, eval_every=1, batch_size=16)
    config["kd_settings"] = {name: {"negatives": 16} for name in LEAKS}
    build_teacher_grid(root, config)
    scramble_labels(root / "split.parquet", root / "scrambled.parquet")
    online_clusters(root, {**config, "mode": "online"})
    return config, root


def online_clusters(root, config) -> None:
    """The teacher's clusters again, recorded for the online config (its cell hash names the mode)."""
    from brcd.cluster import build_clusters, cluster_settings, write_clusters
    from brcd.codes import read_codes

    train = read_codes(root / "teacher.parquet").select("train")
    built = build_clusters(train.codes(), train.index, cluster_settings({"clusters": 3}), seed=0)
    built.metadata.update({"dataset": "synthetic", "bits": 16, "teacher": TEACHER.model, "teacher_seed": 0,
                           "teacher_config_hash": TEACHER.config_hash(config)})
    write_clusters(root / "clusters_online.parquet", built)


def _train(config, root, kd, split, out):
    clusters = "clusters_online.parquet" if config["mode"] == "online" else "clusters.parquet"
    return train_student_module.train_student(
        config, student(kd), str(root / split), str(root / "teacher.pt"), str(out), None,
        student_bank=str(root / "tstudent"), teacher_bank=str(root / "tteacher"),
        clusters_path=str(root / clusters))


def honest_and_blind(config, root, kd, tmp_path, monkeypatch) -> tuple[dict, dict, list]:
    """One run on the true labels, one with the labels scrambled in the split file and the dataset class;
    also the dataset objects the blind run built."""
    honest = _train(config, root, kd, "split.parquet", tmp_path / "true.pt")
    true_splits = Splits(root / "split.parquet")
    real_validation_data = train_student_module.validation_data

    def validation_on_true_labels(source, splits):
        assert splits.fingerprint == true_splits.fingerprint
        return real_validation_data(source, true_splits)

    with monkeypatch.context() as patch:
        patch.setattr(train_student_module, "validation_data", validation_on_true_labels)
        opened = scramble_dataset_labels(patch)
        blind = _train(config, root, kd, "scrambled.parquet", tmp_path / "scrambled.pt")
    return honest, blind, opened


def identical(honest: dict, blind: dict) -> bool:
    """Bit-identical training: every loss term of every epoch, the selected epochs, scores and heads."""
    if blind["history"] != honest["history"] or set(blind["best"]) != set(honest["best"]):
        return False
    for selection, best in honest["best"].items():
        other = blind["best"][selection]
        if (other["epoch"], other["map"]) != (best["epoch"], best["map"]) or other["state"].keys() != best["state"].keys():
            return False
        if not all(torch.equal(other["state"][k], best["state"][k]) for k in best["state"]):
            return False
    return True


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


def test_the_scrambled_dataset_hides_the_labels_but_not_the_images(monkeypatch):
    from brcd.data import DATASETS, create_dataset

    true = create_dataset("synthetic", SIZES)
    true_stand_in = Synthetic.labels_only(SIZES)
    scramble_dataset_labels(monkeypatch)
    for built in (create_dataset("synthetic", SIZES), DATASETS.get("synthetic")(SIZES), Synthetic(SIZES)):
        assert (built.labels != true.labels).any(axis=1).mean() > 0.5
        assert (built.targets != true.targets).mean() > 0.5
        assert all(np.array_equal(built.image(i), true.image(i)) for i in (0, 7, 100))  # the same pixels
    assert (Synthetic.labels_only(SIZES).labels != true_stand_in.labels).any(axis=1).mean() > 0.5


@pytest.mark.parametrize("kd", [name for name in KD_LOSSES.names() if name not in LEAKS])
def test_students_trained_on_scrambled_labels_are_bit_identical(grid, tmp_path, monkeypatch, kd):
    config, root = grid
    honest, blind, opened = honest_and_blind(config, root, kd, tmp_path, monkeypatch)
    assert identical(honest, blind)
    assert not opened  # bank mode: the split file and the banks are all a student run reads


@pytest.mark.parametrize("kd", sorted(OPTIONS))
def test_non_default_options_read_no_label_either(grid, tmp_path, monkeypatch, kd):
    config, root = grid
    config = {**config, "kd_settings": {**config["kd_settings"], kd: OPTIONS[kd]}}
    honest, blind, _ = honest_and_blind(config, root, kd, tmp_path, monkeypatch)
    assert identical(honest, blind)


@pytest.mark.parametrize("kd", ["crd", "packd", "brcd", "sskd"])
def test_online_mode_reads_no_label_either(grid, tmp_path, monkeypatch, kd):
    """Online, the run opens the dataset for its pixels: its labels are scrambled there too."""
    config, root = grid
    config = {**config, "mode": "online", "kd_settings": {**config["kd_settings"], "packd": OPTIONS["packd"]}}
    honest, blind, opened = honest_and_blind(config, root, kd, tmp_path, monkeypatch)
    assert identical(honest, blind)
    assert opened  # the run did read its pixels from a (scrambled) dataset object


@pytest.mark.parametrize("mode", ["bank", "online"])
@pytest.mark.parametrize("leak", LEAKS)
def test_the_comparison_catches_a_leaking_loss(grid, tmp_path, monkeypatch, leak, mode):
    """The positive control: class-conditional negatives from either place the labels live change the run."""
    config, root = grid
    honest, blind, _ = honest_and_blind({**config, "mode": mode}, root, leak, tmp_path, monkeypatch)
    assert not identical(honest, blind)
