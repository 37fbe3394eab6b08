"""Retrieval metrics over Hamming rankings (SPEC §6).

Relevance: a database item is relevant to a query when their multi-hot label
vectors share at least one label. Labels are packed into bit masks once
(:func:`pack_labels`: one word of 8 to 64 bits, or several 64-bit words), so
relevance is one AND per word.

Rankings follow :data:`brcd.retrieval.hamming.TIE_POLICY` (distance
ascending, ties by database order). Definitions:

- ``AP@K`` (conventional): mean, over the relevant items among the top K, of
  the precision at their rank; 0 for a query with no relevant item in its top
  K. ``mAP@K`` is its mean over all queries. ``map_all`` is the same with K =
  the database size.
- tie-aware ``AP@K``: the expectation of AP@K when the items of every
  distance value are put in uniformly random order (independently per
  distance), the whole ranking being truncated at K afterwards. Closed form
  (McSherry & Najork 2008, extended to the truncation): a bucket of n items,
  r relevant, after s items of which c are relevant contributes
  (r/n)(c+1)H0 + r(r-1)/(n(n-1)) H1 with H0 = Σ_{j=1..n} 1/(s+j) and
  H1 = Σ (j-1)/(s+j); the bucket cut by K (t of its items inside) contributes
  the same with m relevant of t, averaged over the hypergeometric law of m,
  and the number of relevant items in the top K, c + m, divides the sum.
- ``precision@k``: share of relevant items among the first k (conventional
  ranking).
- precision-recall by Hamming radius ρ = 0..L: a query retrieves the items
  within distance ρ. ``precision[ρ]`` is the mean of relevant/retrieved over
  the queries that retrieve at least one item (an empty retrieval has no
  precision); ``retrieved_share[ρ]`` is the share of queries that retrieve
  something, so ``precision[ρ] * retrieved_share[ρ]`` is the variant that
  counts an empty retrieval as precision 0. ``precision[ρ]`` is null when no
  query retrieves anything. ``recall[ρ]`` is the mean of relevant retrieved /
  relevant in the database over the queries with at least one relevant item.
- ISD: mean normalised Hamming distance between two encoders' codes of the
  same images. NRA@K: mean |N_T(q) ∩ N_S(q)| / K of two top-K lists.

The counting is done by the compiled kernels of :mod:`brcd.retrieval.kernels`:
O(N) per query without sorting, the top-K metrics from the first items of
each ranking, the whole-ranking ones from complete histograms. No torch here
(fast job start-up).
"""
from __future__ import annotations

import functools
from typing import Iterable, Sequence

import numpy as np

from brcd.errors import DataError
from brcd.retrieval import kernels
from brcd.retrieval.hamming import (
    CountingSearch,
    SearchDatabase,
    as_packed,
    as_words,
    buckets,
    check_pair,
    check_topk,
    code_bits,
    iter_topk,
    map_query_blocks,
    paired_distances,
    search_pair,
    topk,
)

DEFAULT_PRECISION_KS = (1, 10, 100, 1000)
#: values of m per block of the tie-aware computation (bounds its temporary arrays)
RAGGED_BLOCK = 1 << 17


# --------------------------------------------------------------------------- labels


def pack_labels(labels, what: str = "labels") -> np.ndarray:
    """Multi-hot labels (N x C) -> bit masks (bit c = label c), N x W words.

    One word of the smallest unsigned type that holds C bits (uint8 .. uint64);
    beyond 64 classes, ceil(C/64) uint64 words. Small words keep the database
    masks in cache next to the codes during the search.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] == 0:
        raise DataError(f"{what}: expected a multi-hot N x C label matrix, got shape {labels.shape}")
    check_multi_hot(labels, what)
    packed = np.packbits(labels if labels.dtype == np.bool_ else labels != 0, axis=1, bitorder="little")
    n_bytes = packed.shape[1]
    width = next((w for w in (1, 2, 4) if n_bytes <= w), -(-n_bytes // 8) * 8)
    out = np.zeros((len(packed), width), dtype=np.uint8)
    out[:, :n_bytes] = packed
    return out.view({1: np.uint8, 2: np.uint16, 4: np.uint32}.get(width, np.uint64))


def check_multi_hot(labels: np.ndarray, what: str = "labels") -> None:
    """Labels must be 0/1 multi-hot (bool, integer or float 0.0/1.0); anything else raises.

    Relevance is "shares a label", so -1/+1 labels, label indices or scores
    read as multi-hot would make nearly everything relevant. O(N x C), no copy
    for bool and unsigned labels (one max), one boolean temporary for floats.
    """
    kind = labels.dtype.kind
    if kind == "b" or labels.size == 0:
        return
    if kind == "u":
        bad = labels.max() > 1
    elif kind == "i":
        bad = labels.min() < 0 or labels.max() > 1
    elif kind == "f":
        bad = bool(((labels != 0) & (labels != 1)).any())  # also catches NaN
    else:
        raise DataError(f"{what}: expected 0/1 multi-hot labels, got an array of dtype {labels.dtype}")
    if bad:
        found = np.unique(labels[(labels != 0) & (labels != 1)])[:5].tolist()
        raise DataError(
            f"{what} must be 0/1 multi-hot vectors, but contain other values ({found}); "
            "-1/+1 labels or class indices would make nearly every item relevant. Convert them first, "
            "e.g. (labels > 0).astype(np.uint8) for -1/+1 labels, or one-hot encode class indices"
        )


def _check_labels(query_labels, database_labels, n_query: int, n_database: int) -> tuple[np.ndarray, np.ndarray]:
    q, db = np.asarray(query_labels), np.asarray(database_labels)
    if q.ndim != 2 or db.ndim != 2 or q.shape[1] != db.shape[1]:
        raise DataError(
            f"query labels {q.shape} and database labels {db.shape} must be 2-D with the same number of classes"
        )
    if len(q) != n_query or len(db) != n_database:
        raise DataError(
            f"labels do not match the codes: {len(q)} query labels for {n_query} query codes, "
            f"{len(db)} database labels for {n_database} database codes"
        )
    return pack_labels(q, "query labels"), pack_labels(db, "database labels")


# --------------------------------------------------------------------------- top-K statistics


def per_distinct_query(statistics):
    """Run ``statistics(query, database, query_masks, ...)`` once per distinct (code, labels) query.

    Queries with the same code and labels have the same ranking and the same
    relevance, so every per-query result is identical; short codes repeat a
    lot. Each returned array is expanded back to one row per query. The
    database is passed on prepared (:class:`~brcd.retrieval.hamming.SearchDatabase`).
    """
    @functools.wraps(statistics)
    def wrapper(query, database, query_masks, *args, **kwargs):
        query, database = search_pair(query, database)
        key = np.concatenate([query, np.ascontiguousarray(query_masks).view(np.uint8).reshape(len(query), -1)],
                             axis=1)
        _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        results = statistics(query[first], database, query_masks[first], *args, **kwargs)
        return tuple(result[inverse.reshape(-1)] for result in results)

    return wrapper


def over_query_blocks(block, n_query: int) -> tuple[np.ndarray, ...]:
    """Run ``block(rows)`` on consecutive blocks of query rows (threaded); join each returned array."""
    parts = [result for _, result in map_query_blocks(block, n_query)]
    return tuple(np.concatenate(arrays) for arrays in zip(*parts))


def cut_histograms(histograms: np.ndarray, bits: int) -> np.ndarray:
    """The kernels count distances up to the padded word length; codes reach ``bits`` at most."""
    return histograms[:, : bits + 1]


@per_distinct_query
def topk_statistics(query, database, query_masks, database_masks, k: int, cutoffs=None):
    """Per query, from the first ``depth = max(k, cutoffs)`` items of its ranking.

    Returns ``(ap_k, hits, counts, relevant)``: AP@k (Q,), relevant items among
    the first c for each cut-off c (Q x len(cutoffs)), and the histograms of
    items / relevant items by distance up to the depth-th item's distance
    (Q x L+1, farther buckets 0: enough for the tie-aware AP at any k <= depth).
    """
    cutoffs = np.unique(np.asarray([k] if cutoffs is None else cutoffs, dtype=np.int64))
    search = CountingSearch(query, database, max(k, int(cutoffs.max())), query_masks, database_masks)

    bits = code_bits(query)

    def block(rows: slice):
        ids, _, counts, relevant = search.block(rows)
        ap_k, hits = np.empty(len(ids)), np.empty((len(ids), len(cutoffs)), dtype=np.int64)
        kernels.ranked_statistics(ids, search.query_masks[rows], search.db_masks, k, cutoffs, ap_k, hits)
        return ap_k, hits, cut_histograms(counts, bits), cut_histograms(relevant, bits)

    return over_query_blocks(block, len(query))


def map_at_k(query, database, query_labels, database_labels, k: int) -> float:
    """Conventional mAP@K of packed query codes against packed database codes."""
    query, database = search_pair(query, database)
    k = check_topk(k, len(database), "k")
    q_masks, db_masks = _check_labels(query_labels, database_labels, len(query), len(database))
    return float(topk_statistics(query, database, q_masks, db_masks, k)[0].mean())


# --------------------------------------------------------------------------- tie-aware AP


def _harmonic(n: int) -> np.ndarray:
    """H[x] = sum_{i=1..x} 1/i for x = 0..n."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1, dtype=np.float64))])


def _log_factorial(n: int) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])


def _bucket_sums(harm: np.ndarray, before: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """H0 = Σ_{j=1..size} 1/(before+j) and H1 = Σ (j-1)/(before+j)."""
    h0 = harm[before + size] - harm[before]
    h1 = size - (before + 1) * h0
    return h0, h1


def tie_aware_average_precision(counts: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """Expected AP@k under random order within each distance, per query.

    ``counts[q, d]``: database items at distance d from query q; ``relevant[q, d]``:
    how many of them are relevant (both Q x (L+1) integer histograms). Only
    the buckets up to the one holding the k-th item are read: histograms cut
    after it (farther buckets 0) give the same result.
    """
    counts = np.asarray(counts, dtype=np.int64)
    relevant = np.asarray(relevant, dtype=np.int64)
    _check_histograms(counts, relevant, k)
    n_query = len(counts)
    rows = np.arange(n_query)
    cum_n, cum_r = np.cumsum(counts, axis=1), np.cumsum(relevant, axis=1)
    before_n, before_r = cum_n - counts, cum_r - relevant
    total = int(cum_n[:, -1].max())
    if k > cum_n[:, -1].min():
        query = int(np.argmin(cum_n[:, -1]))
        raise ValueError(f"k = {k} exceeds the database size (query {query}'s histogram counts "
                         f"{int(cum_n[query, -1])} items)")
    harm = _harmonic(total)
    boundary = np.argmax(cum_n >= k, axis=1)

    # Buckets entirely inside the top k.
    n_f, r_f = counts.astype(np.float64), relevant.astype(np.float64)
    h0, h1 = _bucket_sums(harm, before_n, counts)
    p_rel = np.divide(r_f, n_f, out=np.zeros_like(n_f), where=counts > 0)
    p_pair = np.divide(r_f * (r_f - 1), n_f * (n_f - 1), out=np.zeros_like(n_f), where=counts > 1)
    expected = p_rel * (before_r + 1) * h0 + p_pair * h1
    inside = np.arange(counts.shape[1])[None, :] < boundary[:, None]
    full_sum = np.where(inside, expected, 0.0).sum(axis=1)

    # The bucket cut by k: t of its n items are inside, m of them relevant (hypergeometric).
    n_b, r_b = counts[rows, boundary], relevant[rows, boundary]
    s_b, c_b = before_n[rows, boundary], before_r[rows, boundary]
    t = k - s_b
    h0_b, h1_b = _bucket_sums(harm, s_b, t)
    low = np.maximum(0, t - (n_b - r_b))
    sizes = np.minimum(r_b, t) - low + 1
    log_fact = _log_factorial(total)
    result = np.empty(n_query)
    # Blocks of queries whose possible values of m number at most RAGGED_BLOCK: bounded memory.
    block_of = np.cumsum(sizes) // RAGGED_BLOCK
    for block in np.unique(block_of):
        sel = np.flatnonzero(block_of == block)
        result[sel] = _boundary_expectation(full_sum[sel], n_b[sel], r_b[sel], c_b[sel], t[sel], h0_b[sel],
                                            h1_b[sel], low[sel], sizes[sel], log_fact)
    return result


def _check_histograms(counts: np.ndarray, relevant: np.ndarray, k) -> None:
    """Input checks of :func:`tie_aware_average_precision` (vectorised, O(Q x L))."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer (the number of ranked items to score); got {k!r}")
    if counts.ndim != 2 or counts.shape != relevant.shape or counts.shape[0] == 0 or counts.shape[1] == 0:
        raise ValueError(
            f"counts and relevant must be non-empty Q x (L+1) histograms of the same shape; "
            f"got {counts.shape} and {relevant.shape}"
        )
    problems = []
    if (counts < 0).any():
        problems.append("negative item counts")
    if (relevant < 0).any():
        problems.append("negative relevant counts")
    over = relevant > counts
    if over.any():
        q, d = np.argwhere(over)[0]
        problems.append(f"more relevant items than items at one distance (query {q}, distance {d}: "
                        f"{relevant[q, d]} relevant of {counts[q, d]})")
    if problems:
        raise ValueError(f"inconsistent distance histograms: {'; '.join(problems)}")


def _boundary_expectation(full_sum, n_b, r_b, c_b, t, h0_b, h1_b, low, sizes, log_fact) -> np.ndarray:
    """E over m ~ Hypergeometric(n_b, r_b, t) of (full_sum + boundary(m)) / (c_b + m), per query."""
    n_query = len(full_sum)
    owner = np.repeat(np.arange(n_query), sizes)
    offsets = np.cumsum(sizes) - sizes
    m = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(offsets - low, sizes)
    n_e, r_e, t_e, c_e = (x[owner] for x in (n_b, r_b, t, c_b))

    def log_choose(a, b):
        return log_fact[a] - log_fact[b] - log_fact[a - b]

    prob = np.exp(log_choose(r_e, m) + log_choose(n_e - r_e, t_e - m) - log_choose(n_e, t_e))
    m_f, t_f = m.astype(np.float64), t_e.astype(np.float64)
    pair = np.divide(m_f * (m_f - 1), t_f * (t_f - 1), out=np.zeros_like(m_f), where=t_e > 1)
    boundary_sum = (m_f / t_f) * (c_e + 1) * h0_b[owner] + pair * h1_b[owner]
    found = c_e + m
    value = np.divide(full_sum[owner] + boundary_sum, found, out=np.zeros_like(m_f), where=found > 0)
    # Normalise by the summed probabilities (exactly 1 up to rounding).
    weight = np.bincount(owner, weights=prob, minlength=n_query)
    return np.bincount(owner, weights=prob * value, minlength=n_query) / weight


# --------------------------------------------------------------------------- whole ranking, PR


@per_distinct_query
def full_ranking_statistics(query, database, query_masks, database_masks):
    """Statistics of every query's whole ranking, one block of queries at a time.

    Returns ``(counts, relevant, ap_all)``: Q x (L+1) int64 histograms of all
    and of relevant database items by distance, and the conventional AP over
    the whole database ranking (Q,).
    """
    q_words, db_words, bits = as_words(query), database.words, code_bits(query)

    def block(rows: slice):
        n = rows.stop - rows.start
        counts = np.empty((n, buckets(q_words)), dtype=np.int64)
        relevant, ap_all = np.empty_like(counts), np.empty(n)
        kernels.full_statistics(q_words[rows], db_words, query_masks[rows], database_masks, counts, relevant, ap_all,
                                np.empty(len(db_words), dtype=np.int64), np.empty(len(db_words), dtype=np.uint8))
        return cut_histograms(counts, bits), cut_histograms(relevant, bits), ap_all

    return over_query_blocks(block, len(query))


def pr_by_radius(counts: np.ndarray, relevant: np.ndarray) -> dict:
    """Precision-recall by Hamming radius from distance histograms (see module docstring)."""
    retrieved, hits = np.cumsum(counts, axis=1), np.cumsum(relevant, axis=1)
    total_relevant = hits[:, -1:]
    has_result = retrieved > 0
    n_with = has_result.sum(axis=0)
    precision_each = np.divide(hits, retrieved, out=np.zeros(hits.shape), where=has_result)
    precision = [float(p / n) if n else None for p, n in zip(precision_each.sum(axis=0), n_with)]
    judged = total_relevant[:, 0] > 0
    recall_each = hits[judged] / total_relevant[judged]
    recall = recall_each.mean(axis=0) if judged.any() else np.full(counts.shape[1], np.nan)
    return {
        "radius": list(range(counts.shape[1])),
        "precision": precision,
        "recall": [None if np.isnan(r) else float(r) for r in recall],
        "retrieved_share": (n_with / len(counts)).tolist(),
    }


# --------------------------------------------------------------------------- teacher/student agreement


def isd(teacher_codes, student_codes) -> float:
    """Mean normalised Hamming distance between two encoders' codes of the same images.

    Both must be packed codes: unpacked 0/1 bytes are rejected by
    :func:`~brcd.retrieval.hamming.as_packed` (they would give an ISD 8x too small).
    """
    teacher_codes, student_codes = as_packed(teacher_codes, "teacher codes"), as_packed(student_codes, "student codes")
    teacher_codes, student_codes = check_pair(teacher_codes, student_codes)
    return float(paired_distances(teacher_codes, student_codes).mean() / code_bits(teacher_codes))


def overlap_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|row_i(a) ∩ row_i(b)| for two Q x K arrays of distinct ids per row."""
    merged = np.sort(np.concatenate([a, b], axis=1), axis=1)
    return (merged[:, 1:] == merged[:, :-1]).sum(axis=1)


def nra_at_k(teacher_pair: Sequence, student_pair: Sequence, k: int) -> float:
    """NRA@K: mean share of the teacher's top-K that the student's top-K also returns.

    ``teacher_pair`` = (teacher query codes, teacher database codes);
    ``student_pair`` = (student-side query codes, database codes of the paradigm).
    Both databases must list the same images in the same order.
    """
    t_query, t_db = check_pair(*teacher_pair)
    s_query, s_db = check_pair(*student_pair)
    if t_query.shape[1] != s_query.shape[1]:
        raise DataError(f"NRA needs codes of the same length; got {code_bits(t_query)} and {code_bits(s_query)} bits")
    if len(t_query) != len(s_query) or len(t_db) != len(s_db):
        raise DataError("NRA needs the same queries and database images on the teacher and the student side")
    k = check_topk(k, len(t_db), "k")
    s_db = SearchDatabase(s_db)  # searched once per block of teacher results
    overlap = 0
    for rows, t_ids, _ in iter_topk(t_query, t_db, k):
        s_ids, _ = topk(s_query[rows], s_db, k)
        overlap += int(overlap_counts(t_ids, s_ids).sum())
    return overlap / (len(t_query) * k)


# --------------------------------------------------------------------------- everything at once


def precision_ks(requested: Iterable[int], k: int, database_size: int) -> list[int]:
    """The precision@k cut-offs: the requested ones that fit the database, plus k."""
    return sorted({int(x) for x in requested if 0 < int(x) <= database_size} | {int(k)})


def retrieval_metrics(query, database, query_labels, database_labels, k: int,
                      precision_at: Iterable[int] = DEFAULT_PRECISION_KS, *, full: bool = True) -> dict:
    """Every ranking metric of one (query codes, database codes) pair.

    Keys: ``map@{k}``, ``map@{k}_tie_aware``, ``precision@k`` ({str(k'): value}),
    and with ``full``: ``map_all``, ``map_all_tie_aware``, ``pr_curve``.
    """
    return retrieval_results(query, database, query_labels, database_labels, k, precision_at, full=full)[0]


def retrieval_results(query, database, query_labels, database_labels, k: int,
                      precision_at: Iterable[int] = DEFAULT_PRECISION_KS, *,
                      full: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """:func:`retrieval_metrics` and the per-query values behind its top-K means.

    The second item holds one value per query row: ``ap@{k}``, ``ap@{k}_tie_aware``
    and ``relevant@{k}`` (relevant items among the first k). Two evaluations on
    the same queries can be compared query by query with them (:mod:`brcd.stats`).
    """
    query, database = search_pair(query, database)  # the database is prepared once for both passes
    k = check_topk(k, len(database), "--topk")
    q_masks, db_masks = _check_labels(query_labels, database_labels, len(query), len(database))
    cutoffs = precision_ks(precision_at, k, len(database))
    ap_k, hits, counts, relevant = topk_statistics(query, database, q_masks, db_masks, k, cutoffs)
    ap_k_tie_aware = tie_aware_average_precision(counts, relevant, k)
    metrics = {
        f"map@{k}": float(ap_k.mean()),
        f"map@{k}_tie_aware": float(ap_k_tie_aware.mean()),
        "precision@k": {str(c): float(hits[:, i].mean() / c) for i, c in enumerate(cutoffs)},
    }
    if full:
        counts, relevant, ap_all = full_ranking_statistics(query, database, q_masks, db_masks)
        metrics["map_all"] = float(ap_all.mean())
        metrics["map_all_tie_aware"] = float(tie_aware_average_precision(counts, relevant, len(database)).mean())
        metrics["pr_curve"] = pr_by_radius(counts, relevant)
    per_query = {f"ap@{k}": ap_k, f"ap@{k}_tie_aware": ap_k_tie_aware,
                 f"relevant@{k}": hits[:, list(cutoffs).index(k)]}
    return metrics, per_query
