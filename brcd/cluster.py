"""Teacher-code clusters and the bit mask of BRCD (SPEC §4, offline steps 1-3).

Input: the trained teacher's code file; its ``train`` rows are the codes of
the *clean* training images. Output: ``clusters.parquet`` with one row per
training image (``index`` = dataset index, ``cluster`` = cluster id), rows in
ascending dataset-index order, which is the order of
``Splits.indices["train"]``: row ``p`` is training position ``p``.

File metadata (JSON in the Parquet schema):

- cell: ``dataset``, ``bits``, ``teacher`` (the code file's ``model``),
  ``teacher_backbone``, ``teacher_seed``, ``teacher_config_hash``,
  ``split_seed``, ``num_train``, ``train_hash`` (hash of the training
  indices, so a file from another split cannot pass as this one);
- clustering: ``K``, ``k_method`` ("config" or "silhouette"), ``silhouette``
  (``{"k": score}``, auto only), ``cluster_range``, ``seed``, ``nredo``,
  ``niter``, ``objective`` (sum of squared distances), ``cluster_sizes``;
- mask: ``margin``, ``centres`` (K x L, mean member code), ``mask``
  (K x L of 0/1), ``bits_kept`` (per cluster);
- ``config_hash`` of everything the clustering depends on.

Why not the reference code's mask builder: it zeroes every entry (SPEC §4,
known defects). Here ``M[c, l] = 1`` iff ``|mu_c,l| >= margin``, plainly.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa

from brcd.config import DEFAULT_MARGIN, check_k_feasible, cluster_settings
from brcd.errors import DataError, MetadataMismatchError
from brcd.io import check_metadata, read_parquet, rebuild_hint, stable_hash, write_parquet
from brcd.layout import CLUSTERS

log = logging.getLogger(__name__)

DEFAULT_NREDO = 5
DEFAULT_NITER = 50
SILHOUETTE_SAMPLE = 2000


def rebuild_fix(path: str | os.PathLike) -> str:
    """The fix for a damaged clusters file, as a sentence: rebuild it from the teacher's codes."""
    return f"To fix it, {rebuild_hint(path)}."


@dataclass
class Clusters:
    """Cluster assignment of the training images, centres and bit mask.

    ``index`` holds the dataset indices of the training images in ascending
    order (= ``Splits.indices["train"]``), so ``assignment[p]`` is the cluster
    of training position ``p``.
    """

    index: np.ndarray  # int64 (N,)
    assignment: np.ndarray  # int64 (N,)
    centres: np.ndarray  # float64 (K, L), member means, in [-1, 1]
    mask: np.ndarray  # uint8 (K, L), 1 = informative bit
    metadata: dict = field(default_factory=dict)

    @property
    def K(self) -> int:
        return int(self.centres.shape[0])

    @property
    def bits(self) -> int:
        return int(self.centres.shape[1])

    @property
    def num_train(self) -> int:
        return int(len(self.index))

    @property
    def bits_kept(self) -> np.ndarray:
        return self.mask.sum(axis=1).astype(np.int64)

    def assignment_for(self, train_indices: Sequence[int]) -> np.ndarray:
        """Cluster id per training position, after checking that the trainer's
        training indices (``Splits.indices["train"]``) are this file's rows."""
        train_indices = np.asarray(train_indices, dtype=np.int64)
        if not np.array_equal(train_indices, self.index):
            raise MetadataMismatchError(
                f"clusters file {self.metadata.get('path', '<memory>')} covers {self.num_train} training images "
                f"that differ from the {len(train_indices)} training indices of the requested split "
                f"(or are in another order). {rebuild_fix(self.metadata.get('path', CLUSTERS))}"
            )
        return self.assignment


# ---------------------------------------------------------------- mask rule


def cluster_centres(codes: np.ndarray, assignment: np.ndarray, k: int) -> np.ndarray:
    """Exact mean code of each cluster's members (float64, K x L)."""
    codes = np.asarray(codes, dtype=np.float64)
    counts = np.bincount(assignment, minlength=k)
    if (counts == 0).any():
        raise ValueError(f"clusters {np.flatnonzero(counts == 0).tolist()} have no members")
    return np.stack([codes[assignment == c].mean(0) for c in range(k)])


def bit_mask(centres: np.ndarray, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """M[c, l] = 1 where the bit is consistent inside the cluster, |mu_c,l| >= margin."""
    # The tiny tolerance keeps exact fractions such as 3 of 4 members = 0.5 on
    # the kept side despite float rounding of the mean.
    return (np.abs(np.asarray(centres, dtype=np.float64)) >= float(margin) - 1e-9).astype(np.uint8)


# ---------------------------------------------------------------- k-means


def _squared_distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (D^2 sampling); faiss itself only seeds at random."""
    n = len(x)
    chosen = [int(rng.integers(n))]
    d2 = _squared_distances(x, x[chosen]).min(1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # fewer distinct points than clusters; checked before we get here
            raise ValueError("k-means++ ran out of distinct points")
        nxt = int(rng.choice(n, p=d2 / total))
        chosen.append(nxt)
        d2 = np.minimum(d2, _squared_distances(x, x[nxt : nxt + 1])[:, 0])
    return x[chosen].copy()


def _lloyd_to_member_means(x: np.ndarray, centres: np.ndarray, max_iter: int = 100):
    """Finish with exact Lloyd steps so that the centres are the members' exact
    means and every point is assigned to its nearest centre (a fixed point)."""
    k = len(centres)
    x64 = x.astype(np.float64)
    centres = centres.astype(np.float64)
    assignment = None
    for _ in range(max_iter):
        d2 = _squared_distances(x64, centres)
        new = d2.argmin(1)
        sizes = np.bincount(new, minlength=k)
        for empty in np.flatnonzero(sizes == 0):
            # Re-seed an empty cluster with the point worst served by its centre, taken from a
            # cluster that keeps a member (one exists: there are at least k points).
            served = np.where(sizes[new] > 1, d2[np.arange(len(x64)), new], -1.0)
            worst = int(served.argmax())
            sizes[new[worst]] -= 1
            sizes[empty] += 1
            new[worst] = empty
            d2[worst] = 0.0
        centres = cluster_centres(x64, new, k)
        if assignment is not None and np.array_equal(new, assignment):
            break
        assignment = new
    objective = float(_squared_distances(x64, centres)[np.arange(len(x64)), assignment].sum())
    return assignment.astype(np.int64), centres, objective


def kmeans(codes: np.ndarray, k: int, seed: int, nredo: int = DEFAULT_NREDO, niter: int = DEFAULT_NITER):
    """k-means with faiss: k-means++ seeding, ``nredo`` restarts, best objective.

    Returns (assignment int64 (N,), centres float64 (K, L), objective).
    """
    import faiss

    x = np.ascontiguousarray(codes, dtype=np.float32)
    best = None
    # One thread: a few thousand codes are too small for OpenMP to pay off, and
    # its spinning threads on shared cores made k-means ~25x slower in practice.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        for restart in range(nredo):
            best = _better(best, _one_restart(x, k, seed, restart, niter))
    finally:
        faiss.omp_set_num_threads(threads)
    return best


def _better(best, result):
    return result if best is None or result[2] < best[2] - 1e-9 else best


def _one_restart(x: np.ndarray, k: int, seed: int, restart: int, niter: int):
    """k-means++ seeds, faiss Lloyd iterations on all points, exact finish."""
    import faiss

    init = _kmeans_plus_plus(x, k, np.random.default_rng([int(seed), restart]))
    km = faiss.Kmeans(
        x.shape[1], k, niter=niter, nredo=1, seed=int(seed) + restart, verbose=False,
        max_points_per_centroid=len(x) + 1, min_points_per_centroid=1,  # use every point, no warnings
    )
    km.train(x, init_centroids=init.astype(np.float32))
    return _lloyd_to_member_means(x, km.centroids)


def silhouette_score(x: np.ndarray, assignment: np.ndarray) -> float:
    """Mean silhouette with Euclidean distance (singletons score 0, as usual)."""
    x = np.asarray(x, dtype=np.float64)
    dist = np.sqrt(_squared_distances(x, x))
    labels = np.unique(assignment)
    if len(labels) < 2:
        return 0.0
    onehot = (assignment[:, None] == labels[None, :]).astype(np.float64)
    sizes = onehot.sum(0)
    mean_to = dist @ onehot  # (n, C) summed distances to each cluster
    own = np.searchsorted(labels, assignment)
    own_size = sizes[own]
    a = mean_to[np.arange(len(x)), own] / np.maximum(own_size - 1, 1)
    other = mean_to / sizes[None, :]
    other[np.arange(len(x)), own] = np.inf
    b = other.min(1)
    s = np.where(own_size > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


def choose_k(codes: np.ndarray, cluster_range: Sequence[int], seed: int, nredo: int, niter: int,
             sample: int = SILHOUETTE_SAMPLE) -> tuple[int, dict[str, float]]:
    """K with the best silhouette over ``cluster_range`` (inclusive; ties -> smaller K).

    k-means runs on all codes; silhouettes on a seeded subsample for speed.
    """
    lo, hi = int(cluster_range[0]), int(cluster_range[1])
    rng = np.random.default_rng([int(seed), 7])
    subset = rng.choice(len(codes), size=min(sample, len(codes)), replace=False)
    scores: dict[str, float] = {}
    for k in range(lo, hi + 1):
        assignment, _, _ = kmeans(codes, k, seed, nredo, niter)
        scores[str(k)] = silhouette_score(codes[subset].astype(np.float64), assignment[subset])
        log.info("K=%d: silhouette %.4f", k, scores[str(k)])
    best = max(range(lo, hi + 1), key=lambda k: (scores[str(k)], -k))
    return best, scores


# ---------------------------------------------------------------- settings


# ---------------------------------------------------------------- building


def build_clusters(codes: np.ndarray, index: np.ndarray, settings: Mapping, seed: int = 0,
                   nredo: int = DEFAULT_NREDO, niter: int = DEFAULT_NITER) -> Clusters:
    """Cluster ±1 codes of the training images; ``settings`` as from :func:`cluster_settings`."""
    settings = cluster_settings(settings)
    index = np.asarray(index, dtype=np.int64)
    codes = np.asarray(codes)
    order = np.argsort(index, kind="stable")  # rows in training-position order
    index, codes = index[order], codes[order]
    if len(np.unique(index)) != len(index):
        raise DataError("the teacher's code file lists a training image twice; rerun the encode_teacher rule")
    n = len(codes)
    distinct = len(np.unique(codes, axis=0))
    search_range = check_k_feasible(settings["clusters"], settings["cluster_range"], n, distinct)
    metadata: dict = {"seed": int(seed), "nredo": int(nredo), "niter": int(niter), "margin": settings["margin"],
                      "cluster_range": settings["cluster_range"]}
    if search_range is None:
        k = settings["clusters"]
        metadata.update(k_method="config")
    else:
        k, scores = choose_k(codes, search_range, seed, nredo, niter)
        metadata.update(k_method="silhouette", silhouette=scores, silhouette_metric="euclidean on ±1 codes",
                        silhouette_sample=min(SILHOUETTE_SAMPLE, n), searched_range=search_range)
    assignment, centres, objective = kmeans(codes, k, seed, nredo, niter)
    mask = bit_mask(centres, settings["margin"])
    metadata.update(K=int(k), objective=objective, centres=centres.tolist(), mask=mask.tolist(),
                    bits_kept=mask.sum(1).tolist(), cluster_sizes=np.bincount(assignment, minlength=k).tolist(),
                    num_train=n, train_hash=train_hash(index), bits=int(codes.shape[1]))
    return Clusters(index=index, assignment=assignment, centres=centres, mask=mask, metadata=metadata)


def train_hash(train_indices) -> str:
    """Fingerprint of a training split (its sorted dataset indices)."""
    return stable_hash(sorted(int(i) for i in np.asarray(train_indices).tolist()))


def expected_cell(dataset: str, bits: int, teacher: str | None = None, train_indices=None,
                  split_seed: int | None = None, **extra) -> dict:
    """The ``expected`` dict for :func:`load_clusters` from what a trainer knows.

    ``teacher`` is the ``model`` string of the teacher's code file;
    ``train_indices`` = ``Splits.indices["train"]``. Keys left as None are not checked.
    """
    expected = {"dataset": dataset, "bits": int(bits), "teacher": teacher, "split_seed": split_seed, **extra}
    if train_indices is not None:
        expected["num_train"] = int(len(train_indices))
        expected["train_hash"] = train_hash(train_indices)
    return {key: value for key, value in expected.items() if value is not None}


# ---------------------------------------------------------------- file


def write_clusters(path: str | os.PathLike, clusters: Clusters) -> None:
    table = pa.table({
        "index": pa.array(clusters.index.astype(np.int64)),
        "cluster": pa.array(clusters.assignment.astype(np.int32)),
    })
    write_parquet(path, table, clusters.metadata)


def load_clusters(path: str | os.PathLike, expected: Mapping | None = None, train_indices=None) -> Clusters:
    """Read a clusters file, checking its metadata against the requested cell.

    ``expected`` (e.g. from :func:`expected_cell`): a different teacher, bit
    length or split raises :class:`MetadataMismatchError`. With
    ``train_indices`` the rows must also be exactly those training images.
    """
    table, metadata = read_parquet(path, "clusters file", rebuild_fix(path))
    check_metadata(metadata, dict(expected or {}), f"clusters file {path}", rebuild_fix(path))
    for column in ("index", "cluster"):
        if column not in table.column_names:
            raise DataError(f"clusters file {path} lacks column {column!r}. {rebuild_fix(path)}")
    index = table.column("index").to_numpy().astype(np.int64)
    assignment = table.column("cluster").to_numpy().astype(np.int64)
    centres = np.asarray(metadata.get("centres"), dtype=np.float64)
    mask = np.asarray(metadata.get("mask"), dtype=np.uint8)
    k, bits = int(metadata.get("K", -1)), int(metadata.get("bits", -1))
    problems = []
    if centres.shape != (k, bits) or mask.shape != (k, bits):
        problems.append(f"centres {centres.shape} / mask {mask.shape} are not K x bits = ({k}, {bits})")
    if len(index) and (assignment.min() < 0 or assignment.max() >= k):
        problems.append("cluster ids outside 0..K-1")
    if np.any(np.diff(index) <= 0):
        problems.append("rows are not in ascending dataset-index order")
    if problems:
        raise DataError(f"clusters file {path} is malformed: {'; '.join(problems)}. {rebuild_fix(path)}")
    clusters = Clusters(index=index, assignment=assignment, centres=centres, mask=mask,
                        metadata={**metadata, "path": str(path)})
    if train_indices is not None:
        clusters.assignment_for(train_indices)
    return clusters


# ---------------------------------------------------------------- CLI


def configure_parser(parser) -> None:
    parser.add_argument("--config", required=True, help="grid config YAML (its `brcd` section)")
    parser.add_argument("--teacher-codes", required=True, help="the trained teacher's codes.parquet")
    parser.add_argument("--split", required=True, help="the dataset's split.parquet")
    parser.add_argument("--out", required=True, help="output clusters.parquet")
    parser.add_argument("--seed", type=int, default=None, help="k-means seed (default: the teacher's seed)")


def run(args) -> None:
    from brcd.codes import read_codes
    from brcd.config import load_config
    from brcd.data.splits import Splits

    config = load_config(args.config)
    settings = cluster_settings(config.get("brcd"))
    code_file = read_codes(args.teacher_codes)
    splits = Splits(args.split)
    meta = code_file.metadata
    check_metadata({"dataset": meta.get("dataset")}, {"dataset": splits.dataset},
                   f"teacher code file {args.teacher_codes}", f"pass the split file of dataset {meta.get('dataset')!r}")
    train = code_file.select("train")
    if not np.array_equal(np.sort(train.index), splits.indices["train"]):
        raise MetadataMismatchError(
            f"the train rows of {args.teacher_codes} are not the training images of {args.split}; "
            f"re-encode the teacher with this split: {rebuild_hint(args.teacher_codes)}"
        )
    seed = int(args.seed if args.seed is not None else meta.get("seed", 0))
    clusters = build_clusters(train.codes(), train.index, settings, seed=seed)
    clusters.metadata.update(
        dataset=meta["dataset"], teacher=meta["model"], teacher_backbone=meta.get("backbone"),
        teacher_seed=meta.get("seed"), teacher_config_hash=meta.get("config_hash"),
        split_seed=splits.metadata.get("seed"), split_protocol=splits.metadata.get("protocol"),
        requested_clusters=settings["clusters"],
    )
    clusters.metadata["config_hash"] = stable_hash({
        "teacher_config_hash": meta.get("config_hash"), "train_hash": clusters.metadata["train_hash"],
        "settings": settings, "seed": seed, "nredo": clusters.metadata["nredo"], "niter": clusters.metadata["niter"],
    })
    write_clusters(args.out, clusters)
    how = "from `brcd.clusters`" if clusters.metadata["k_method"] == "config" else "by silhouette"
    log.info("%s, %d bits, teacher %s: K=%d (%s), margin %.2f; bits kept per cluster %s; sizes %s -> %s",
             meta["dataset"], clusters.bits, meta["model"], clusters.K, how, settings["margin"],
             clusters.bits_kept.tolist(), clusters.metadata["cluster_sizes"], args.out)
