"""Teacher-code clusters and the BRCD bit mask (brcd/cluster.py)."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from brcd.cli import main
from brcd.cluster import (Clusters, bit_mask, build_clusters, cluster_centres, cluster_settings, expected_cell,
                          load_clusters, silhouette_score, write_clusters)
from brcd.codes import pack_codes, write_codes
from brcd.config import REPO_ROOT
from brcd.data import create_dataset
from brcd.data.splits import Splits, write_splits
from brcd.errors import ConfigError, MetadataMismatchError


def planted_codes(k=4, per_cluster=50, bits=32, noise=0.05, redundant=0, seed=0):
    """±1 codes around k random prototypes; ``redundant`` bits are random coins
    inside every cluster (the bits the mask should drop)."""
    rng = np.random.default_rng(seed)
    prototypes = rng.choice([-1, 1], size=(k, bits))
    labels = np.repeat(np.arange(k), per_cluster)
    codes = prototypes[labels] * np.where(rng.random((len(labels), bits)) < noise, -1, 1)
    if redundant:
        codes[:, :redundant] = rng.choice([-1, 1], size=(len(labels), redundant))
    return codes.astype(np.int8), labels


def is_relabelling(found: np.ndarray, planted: np.ndarray) -> bool:
    pairs = set(zip(found.tolist(), planted.tolist()))
    return len(pairs) == len(set(found.tolist())) == len(set(planted.tolist()))


def purity(found: np.ndarray, planted: np.ndarray) -> float:
    """Fraction of points in their cluster's majority class; 0 if two clusters share a majority."""
    majority = {c: np.bincount(planted[found == c]).argmax() for c in np.unique(found)}
    if len(set(majority.values())) < len(majority):
        return 0.0
    return float(np.mean([majority[c] == p for c, p in zip(found, planted)]))


def test_mask_rule_matches_hand_computation():
    # Cluster 0 has four members whose columns hold 4, 3, 2, 1, 0 plus-ones:
    # means 1, 0.5, 0, -0.5, -1. Cluster 1 has two members that agree everywhere
    # except on bit 2.
    cluster0 = np.array([[1, 1, 1, 1, -1], [1, 1, 1, -1, -1], [1, 1, -1, -1, -1], [1, -1, -1, -1, -1]])
    cluster1 = np.array([[-1, 1, 1, -1, 1], [-1, 1, -1, -1, 1]])
    codes = np.concatenate([cluster0, cluster1])
    assignment = np.array([0, 0, 0, 0, 1, 1])
    centres = cluster_centres(codes, assignment, 2)
    np.testing.assert_allclose(centres, [[1, 0.5, 0, -0.5, -1], [-1, 1, 0, -1, 1]])
    assert bit_mask(centres, 0.5).tolist() == [[1, 1, 0, 1, 1], [1, 1, 0, 1, 1]]
    assert bit_mask(centres, 0.6).tolist() == [[1, 0, 0, 0, 1], [1, 1, 0, 1, 1]]
    assert bit_mask(centres, 0.0).tolist() == [[1] * 5, [1] * 5]


def test_kmeans_recovers_planted_clusters_and_centres_are_member_means():
    codes, labels = planted_codes(k=5, bits=32, seed=1)
    clusters = build_clusters(codes, np.arange(len(codes)), {"clusters": 5}, seed=0)
    assert clusters.K == 5 and clusters.metadata["k_method"] == "config"
    assert is_relabelling(clusters.assignment, labels)
    np.testing.assert_allclose(clusters.centres, cluster_centres(codes, clusters.assignment, 5))
    assert np.all(np.abs(clusters.centres) <= 1)
    # every training image sits in its nearest centre (the offset test of BRCD relies on it)
    d2 = ((codes[:, None, :] - clusters.centres[None]) ** 2).sum(-1)
    assert np.array_equal(d2.argmin(1), clusters.assignment)
    assert clusters.bits_kept.tolist() == clusters.metadata["bits_kept"]


def test_an_empty_cluster_is_reseeded_without_emptying_another():
    from brcd.cluster import _lloyd_to_member_means

    # 0 and 1 go to the first centre, 5 alone to the second, none to the third. The worst-served
    # point is 5; taking it would empty the second cluster, so a point of the first is taken.
    x = np.array([[0.0], [1.0], [5.0]], dtype=np.float32)
    assignment, centres, _ = _lloyd_to_member_means(x, np.array([[0.5], [7.0], [100.0]]))
    assert sorted(np.bincount(assignment, minlength=3)) == [1, 1, 1]
    np.testing.assert_allclose(np.sort(centres[:, 0]), [0.0, 1.0, 5.0])


def test_kmeans_is_deterministic_for_a_seed():
    codes, _ = planted_codes(k=6, noise=0.2, seed=2)
    a = build_clusters(codes, np.arange(len(codes)), {"clusters": 6}, seed=3)
    b = build_clusters(codes, np.arange(len(codes)), {"clusters": 6}, seed=3)
    assert np.array_equal(a.assignment, b.assignment)


def test_auto_k_picks_the_planted_k_and_records_the_method():
    codes, labels = planted_codes(k=4, seed=3)
    clusters = build_clusters(codes, np.arange(len(codes)), {"clusters": "auto", "cluster_range": [2, 8]}, seed=0)
    assert clusters.K == 4
    assert clusters.metadata["k_method"] == "silhouette"
    scores = clusters.metadata["silhouette"]
    assert sorted(int(k) for k in scores) == list(range(2, 9))
    assert max(scores, key=scores.get) == "4"
    assert is_relabelling(clusters.assignment, labels)


def test_silhouette_of_a_perfect_split_is_high_and_of_a_random_split_low():
    codes, labels = planted_codes(k=3, noise=0.0, seed=4)
    assert silhouette_score(codes, labels) == pytest.approx(1.0)
    random = np.random.default_rng(0).integers(0, 3, size=len(codes))
    assert silhouette_score(codes, random) < 0.1


def test_mask_on_clustered_data_is_neither_all_zero_nor_all_one():
    # The reference code shipped an all-zero mask (SPEC §4, known defects).
    codes, _ = planted_codes(k=4, bits=32, redundant=12, seed=5)
    clusters = build_clusters(codes, np.arange(len(codes)), {"clusters": 4, "margin": 0.5}, seed=0)
    assert 0 < clusters.mask.sum() < clusters.mask.size
    # the coin-flip bits are the ones dropped, the prototype bits are kept
    assert clusters.mask[:, :12].sum() == 0
    assert clusters.mask[:, 12:].all()
    assert clusters.bits_kept.tolist() == [20] * 4


def test_k_larger_than_the_training_set_is_a_config_error():
    codes, _ = planted_codes(k=2, per_cluster=3)
    with pytest.raises(ConfigError, match=r"brcd\.clusters"):
        build_clusters(codes, np.arange(len(codes)), {"clusters": 7})
    with pytest.raises(ConfigError, match=r"brcd\.cluster_range"):
        build_clusters(codes[:2], np.arange(2), {"clusters": "auto", "cluster_range": [3, 5]})


@pytest.mark.parametrize("settings, key", [
    ({"clusters": 1}, "brcd.clusters"), ({"clusters": "many"}, "brcd.clusters"),
    ({"margin": 1.5}, "brcd.margin"), ({"cluster_range": [5, 3]}, "brcd.cluster_range"),
])
def test_bad_cluster_settings(settings, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cluster_settings(settings)


def test_file_round_trip_and_metadata_mismatches(tmp_path):
    codes, _ = planted_codes(k=3, bits=16, seed=6)
    index = np.arange(len(codes)) * 2 + 1
    clusters = build_clusters(codes, index, {"clusters": 3}, seed=0)
    clusters.metadata.update(dataset="synthetic", teacher="teacher/cibhash/t/seed0", split_seed=0)
    path = tmp_path / "clusters.parquet"
    write_clusters(path, clusters)

    good = expected_cell("synthetic", 16, teacher="teacher/cibhash/t/seed0", train_indices=index, split_seed=0)
    loaded = load_clusters(path, good, train_indices=index)
    assert isinstance(loaded, Clusters)
    assert np.array_equal(loaded.index, index) and np.array_equal(loaded.assignment, clusters.assignment)
    np.testing.assert_allclose(loaded.centres, clusters.centres)
    assert np.array_equal(loaded.mask, clusters.mask) and loaded.K == 3 and loaded.bits == 16

    for wrong, what in [({**good, "teacher": "teacher/cibhash/other/seed0"}, "teacher"),
                        ({**good, "bits": 32}, "bits"),
                        (expected_cell("synthetic", 16, teacher="teacher/cibhash/t/seed0",
                                       train_indices=index[:-1], split_seed=0), "train"),
                        ({**good, "split_seed": 1}, "split_seed")]:
        with pytest.raises(MetadataMismatchError, match=what):
            load_clusters(path, wrong)
    with pytest.raises(MetadataMismatchError, match="training indices"):
        loaded.assignment_for(index[::-1])


# ---------------------------------------------------------------- CLI


@pytest.fixture()
def cell(tmp_path):
    """A split file of the tiny synthetic dataset and a teacher code file with
    planted structure (codes follow the class labels)."""
    config = yaml.safe_load((REPO_ROOT / "config" / "test.yaml").read_text())
    config["brcd"] = {"clusters": 4, "margin": 0.5}
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    options = config["datasets"]["synthetic"]
    split_path = tmp_path / "split.parquet"
    write_splits(split_path, create_dataset("synthetic", options), options, seed=0)
    splits = Splits(split_path)
    return config_path, split_path, splits


def write_teacher_codes(path, splits, bits=16, seed=0, train=None):
    rng = np.random.default_rng(seed)
    prototypes = rng.choice([-1, 1], size=(splits.metadata["num_classes"], bits))
    names = ["train", "query", "val", "database"]
    index = np.concatenate([splits.indices[n] if n != "train" or train is None else train for n in names])
    split = np.concatenate([[n] * len(splits.indices[n] if n != "train" or train is None else train) for n in names])
    labels = splits.labels(index).argmax(1)
    codes = prototypes[labels] * np.where(rng.random((len(index), bits)) < 0.05, -1, 1)
    metadata = {"dataset": "synthetic", "model": "teacher/cibhash/tteacher/seed0", "bits": bits,
                "backbone": "timm:test_efficientnet", "seed": 0, "config_hash": "abc123"}
    write_codes(path, index, split, pack_codes(codes), metadata)


def test_cli_writes_a_clusters_file_for_the_cell(cell, tmp_path):
    config_path, split_path, splits = cell
    codes_path, out = tmp_path / "codes.parquet", tmp_path / "out" / "clusters.parquet"
    write_teacher_codes(codes_path, splits)
    rc = main(["cluster", "--config", str(config_path), "--teacher-codes", str(codes_path),
               "--split", str(split_path), "--out", str(out)])
    assert rc == 0
    expected = expected_cell("synthetic", 16, teacher="teacher/cibhash/tteacher/seed0",
                             train_indices=splits.indices["train"], split_seed=0)
    clusters = load_clusters(out, expected, train_indices=splits.indices["train"])
    assert clusters.K == 4 and clusters.metadata["k_method"] == "config"
    # a noisy code may sit nearer another prototype, so allow a stray point or two
    assert purity(clusters.assignment, splits.labels(clusters.index).argmax(1)) >= 0.95
    meta = clusters.metadata
    for key in ("teacher_config_hash", "teacher_backbone", "margin", "centres", "mask", "bits_kept", "seed",
                "config_hash", "cluster_sizes"):
        assert key in meta
    assert meta["teacher_config_hash"] == "abc123" and meta["margin"] == 0.5
    with pytest.raises(MetadataMismatchError, match="teacher"):
        load_clusters(out, {**expected, "teacher": "teacher/cibhash/other/seed0"})


def test_cli_rejects_codes_of_another_split(cell, tmp_path, capsys):
    config_path, split_path, splits = cell
    codes_path = tmp_path / "codes.parquet"
    write_teacher_codes(codes_path, splits, train=splits.indices["train"][:-3])
    rc = main(["cluster", "--config", str(config_path), "--teacher-codes", str(codes_path),
               "--split", str(split_path), "--out", str(tmp_path / "clusters.parquet")])
    assert rc == 2
    assert "re-encode the teacher" in capsys.readouterr().err
    assert not (tmp_path / "clusters.parquet").exists()


def test_cli_k_above_the_training_set_fails_before_clustering(cell, tmp_path, capsys):
    config_path, split_path, splits = cell
    config = yaml.safe_load(config_path.read_text())
    config["brcd"]["clusters"] = len(splits.indices["train"]) + 1
    config_path.write_text(yaml.safe_dump(config))
    codes_path = tmp_path / "codes.parquet"
    write_teacher_codes(codes_path, splits)
    rc = main(["cluster", "--config", str(config_path), "--teacher-codes", str(codes_path),
               "--split", str(split_path), "--out", str(tmp_path / "clusters.parquet")])
    assert rc == 2 and "brcd.clusters" in capsys.readouterr().err
