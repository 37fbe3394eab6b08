"""Exact Hamming search and retrieval metrics against plain reference code."""
from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

from brcd.errors import ConfigError, DataError
from brcd.retrieval import (
    SEARCH_ENGINES,
    TIE_POLICY,
    hamming_distances,
    isd,
    map_at_k,
    nra_at_k,
    pr_by_radius,
    retrieval_metrics,
    tie_aware_average_precision,
    topk,
)
from brcd.retrieval import hamming as hamming_module
from brcd.retrieval.metrics import full_ranking_statistics, pack_labels, topk_statistics

# ----------------------------------------------------------------------------- helpers


def pack(bits: np.ndarray) -> np.ndarray:
    return np.packbits(np.asarray(bits, dtype=np.uint8), axis=1, bitorder="big")


def ref_distances(query: np.ndarray, database: np.ndarray) -> np.ndarray:
    a, b = np.unpackbits(query, axis=1), np.unpackbits(database, axis=1)
    return (a[:, None, :] != b[None, :, :]).sum(axis=2)


def ref_relevance(query_labels, database_labels) -> np.ndarray:
    return (query_labels.astype(int) @ database_labels.T.astype(int)) > 0


def ref_ap(ranked_relevance) -> float:
    """AP as the classic hashing codebases compute it (count / position over hits)."""
    hits = np.flatnonzero(ranked_relevance)
    if len(hits) == 0:
        return 0.0
    return float(np.mean(np.arange(1, len(hits) + 1) / (hits + 1.0)))


def ref_map(query, database, query_labels, database_labels, k) -> float:
    """The straightforward loop: distances, stable argsort, AP of the top k."""
    dist = ref_distances(query, database)
    rel = ref_relevance(query_labels, database_labels)
    return float(np.mean([ref_ap(rel[i, np.argsort(dist[i], kind="stable")][:k]) for i in range(len(query))]))


def tied_codes(rng, n: int, bits: int, pool: int) -> np.ndarray:
    """Codes drawn from a small pool of distinct codes: many exact ties in distance."""
    prototypes = rng.integers(0, 2, size=(pool, bits))
    return pack(prototypes[rng.integers(0, pool, size=n)])


def multi_hot(rng, n: int, classes: int, p: float = 0.3) -> np.ndarray:
    return (rng.random((n, classes)) < p).astype(np.uint8)


# ----------------------------------------------------------------------------- search


@pytest.mark.parametrize("bits", [8, 16, 24, 64, 72, 264])
def test_distances_match_bit_by_bit_reference(bits):
    rng = np.random.default_rng(bits)
    query, database = pack(rng.integers(0, 2, (7, bits))), pack(rng.integers(0, 2, (50, bits)))
    dist = hamming_distances(query, database)
    assert dist.dtype == (np.uint8 if bits <= 255 else np.uint16)
    np.testing.assert_array_equal(dist, ref_distances(query, database))


@pytest.mark.parametrize("engine", SEARCH_ENGINES.names())
@pytest.mark.parametrize("bits,k", [(8, 1), (16, 37), (16, 400), (64, 50), (72, 90), (136, 20)])
def test_topk_is_the_stable_ranking(engine, bits, k):
    rng = np.random.default_rng(k)
    database = tied_codes(rng, 400, bits, pool=12)
    query = tied_codes(rng, 40, bits, pool=12)  # more than one block of queries
    ids, dist = topk(query, database, k, engine=engine)
    full = ref_distances(query, database)
    expected = np.argsort(full, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(dist, np.take_along_axis(full, expected, axis=1))
    prepared = hamming_module.SearchDatabase(database)  # prepared once, as time-search does
    np.testing.assert_array_equal(topk(query, prepared, k, engine=engine)[0], expected)
    assert TIE_POLICY == "hamming distance ascending, ties by database order"


def test_topk_on_random_codes_and_threads_agree_with_argsort():
    rng = np.random.default_rng(4)  # 9,000 rows: the radius is guessed from a strided sample
    database, query = pack(rng.integers(0, 2, (9000, 32))), pack(rng.integers(0, 2, (70, 32)))
    expected = np.argsort(ref_distances(query, database), axis=1, kind="stable")[:, :300]
    for threads in (1, 2):
        hamming_module.set_search_threads(threads)
        try:
            np.testing.assert_array_equal(topk(query, database, 300)[0], expected)
        finally:
            hamming_module.set_search_threads(None)


@pytest.mark.parametrize("bits,classes", [(72, 9), (136, 20), (64, 33)])
def test_metrics_on_long_codes_large_databases_and_every_mask_width(bits, classes):
    """Several words per code, a sampled radius guess (N > 4,096), uint16/uint32/uint64 label masks,
    and duplicate query codes with different labels."""
    rng = np.random.default_rng(bits + classes)
    database = pack(rng.integers(0, 2, (5000, bits)))
    query = np.concatenate([pack(rng.integers(0, 2, (6, bits)))] * 2)  # each code twice
    db_labels, q_labels = multi_hot(rng, 5000, classes, 0.1), multi_hot(rng, 12, classes, 0.1)
    assert pack_labels(q_labels).dtype == {9: np.uint16, 20: np.uint32, 33: np.uint64}[classes]
    dist, rel = ref_distances(query, database), ref_relevance(q_labels, db_labels)
    order = np.argsort(dist, axis=1, kind="stable")
    for k in (1, 777):
        expected = np.mean([ref_ap(rel[i, order[i]][:k]) for i in range(len(query))])
        assert map_at_k(query, database, q_labels, db_labels, k) == pytest.approx(expected, abs=1e-12)
    metrics = retrieval_metrics(query, database, q_labels, db_labels, 5000, precision_at=[10])
    assert metrics["map_all"] == pytest.approx(np.mean([ref_ap(rel[i, order[i]]) for i in range(12)]), abs=1e-12)
    assert metrics["precision@k"]["10"] == pytest.approx(np.mean([rel[i, order[i, :10]].mean() for i in range(12)]))


def test_counting_search_recovers_from_a_misleading_sample():
    """The radius guessed from a strided sample can hold too few items: the result must not change."""
    n = 2 * 4096  # the sample takes every second row: all of them at distance 0
    database = np.zeros((n, 8), dtype=np.uint8)
    database[1::2] = 255  # odd rows at distance 64
    query = np.zeros((1, 8), dtype=np.uint8)
    ids, dist = topk(query, database, 5000)
    np.testing.assert_array_equal(ids[0], np.concatenate([np.arange(0, n, 2), np.arange(1, 2 * 904, 2)]))
    assert (dist[0, :4096] == 0).all() and (dist[0, 4096:] == 64).all()


def test_unknown_search_engine_lists_the_engines():
    codes = pack(np.zeros((2, 8), dtype=np.uint8))
    with pytest.raises(ConfigError, match="allowed values: counting, faiss"):
        topk(codes, codes, 1, engine="annoy")


def test_search_rejects_bad_input():
    rng = np.random.default_rng(0)
    a, b = pack(rng.integers(0, 2, (3, 16))), pack(rng.integers(0, 2, (5, 64)))
    with pytest.raises(DataError, match="16 bits but database codes have 64"):
        topk(a, b, 2)
    with pytest.raises(DataError, match="16 bits but database codes have 64"):
        topk(a, hamming_module.SearchDatabase(b), 2)
    with pytest.raises(ConfigError, match="larger than the database"):
        topk(a, a, 4)
    with pytest.raises(DataError, match="empty"):
        topk(a[:0], a, 1)


def test_retrieval_does_not_import_torch():
    code = "import sys, brcd.retrieval, brcd.evaluate; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- mAP@K


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("bits,k", [(8, 25), (16, 60), (32, 200)])
def test_map_at_k_matches_reference_loop(multi_label, bits, k):
    rng = np.random.default_rng(bits + k + multi_label)
    database, query = tied_codes(rng, 200, bits, 15), tied_codes(rng, 40, bits, 15)
    if multi_label:
        db_labels, q_labels = multi_hot(rng, 200, 70, 0.02), multi_hot(rng, 40, 70, 0.02)  # 70 classes: 2 words
    else:
        db_labels = np.eye(5, dtype=np.uint8)[rng.integers(0, 5, 200)]
        q_labels = np.eye(6, dtype=np.uint8)[rng.integers(0, 6, 40)][:, :5]  # class 5 -> no label
        q_labels[:3] = 0
        q_labels[:3, 4] = 1
        db_labels[:, 4] = 0  # queries of class 4 (and the unlabelled) have no relevant item at all
    expected = ref_map(query, database, q_labels, db_labels, k)
    per_query = [ref_ap(r) for r in ref_relevance(q_labels, db_labels)]
    assert min(per_query) == 0.0  # some queries without any relevant item in the top k
    assert map_at_k(query, database, q_labels, db_labels, k) == pytest.approx(expected, abs=1e-12)
    metrics = retrieval_metrics(query, database, q_labels, db_labels, k)
    assert metrics[f"map@{k}"] == pytest.approx(expected, abs=1e-12)
    assert metrics["map_all"] == pytest.approx(ref_map(query, database, q_labels, db_labels, len(database)), abs=1e-12)


def test_query_without_relevant_item_in_top_k_scores_zero():
    # database: 4 irrelevant items at distance 0, then the relevant one further away
    database = pack([[0] * 8] * 4 + [[1] * 8])
    query = pack([[0] * 8])
    labels_db = np.array([[0, 1]] * 4 + [[1, 0]], dtype=np.uint8)
    assert map_at_k(query, database, [[1, 0]], labels_db, 4) == 0.0
    assert map_at_k(query, database, [[1, 0]], labels_db, 5) == pytest.approx(1 / 5)


def test_average_precision_hand_computed():
    # database items at distances 0, 1, 2, 3 from the query, relevant: yes, no, yes, no
    database = pack([[0] * 8, [1] + [0] * 7, [1, 1] + [0] * 6, [1, 1, 1] + [0] * 5])
    labels_db = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=np.uint8)
    query = pack([[0] * 8, [1, 1, 1] + [0] * 5, [0] * 8])
    labels_q = np.array([[1, 0], [1, 0], [0, 0]], dtype=np.uint8)  # the last query: no relevant item
    # query 0: hits at ranks 1, 3 -> (1 + 2/3) / 2; query 1 ranks 3, 2, 1, 0: hits at ranks 2, 4 -> (1/2 + 2/4) / 2
    expected = ((1 + 2 / 3) / 2 + (1 / 2 + 2 / 4) / 2 + 0.0) / 3
    assert map_at_k(query, database, labels_q, labels_db, 4) == pytest.approx(expected)
    assert map_at_k(query, database, labels_q, labels_db, 1) == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------- tie-aware mAP


def consistent_orderings(distances: np.ndarray) -> list[list[int]]:
    """Every ordering of the items consistent with the distances (tied items permuted)."""
    return [list(perm) for perm in itertools.permutations(range(len(distances)))
            if np.all(np.diff(distances[list(perm)]) >= 0)]


def brute_force_tie_aware(distances: np.ndarray, relevant: np.ndarray, k: int, orderings=None) -> float:
    """Mean AP@k over every ordering consistent with the distances."""
    orderings = orderings if orderings is not None else consistent_orderings(distances)
    return float(np.mean([ref_ap(relevant[perm][:k]) for perm in orderings]))


def histograms(distances, relevant, buckets):
    counts = np.bincount(distances, minlength=buckets)[None]
    rel = np.bincount(distances[relevant.astype(bool)], minlength=buckets)[None]
    return counts, rel


def test_tie_aware_map_matches_brute_force_over_orderings():
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(60):
        n = int(rng.integers(1, 8))
        distances = rng.integers(0, 4, size=n)
        relevant = rng.random(n) < rng.uniform(0.1, 0.9)
        counts, rel = histograms(distances, relevant, 4)
        orderings = consistent_orderings(distances)
        for k in range(1, n + 1):
            expected = brute_force_tie_aware(distances, relevant, k, orderings)
            got = tie_aware_average_precision(counts, rel, k)[0]
            assert got == pytest.approx(expected, abs=1e-12), (distances, relevant, k)
            checked += 1
    assert checked > 100


def test_tie_aware_equals_conventional_without_ties_and_differs_with_them():
    distances, relevant = np.array([0, 1, 2, 3]), np.array([0, 1, 0, 1], dtype=bool)
    counts, rel = histograms(distances, relevant, 4)
    assert tie_aware_average_precision(counts, rel, 3)[0] == pytest.approx(ref_ap(relevant[:3]))
    # all tied: conventional order puts the relevant item last, the expectation does not
    distances, relevant = np.zeros(3, dtype=int), np.array([0, 0, 1], dtype=bool)
    counts, rel = histograms(distances, relevant, 1)
    assert ref_ap(relevant[:2]) == 0.0
    # AP@2 over orderings: relevant at rank 1 (1/3: AP 1), rank 2 (1/3: AP 1/2), rank 3 (1/3: AP 0)
    assert tie_aware_average_precision(counts, rel, 2)[0] == pytest.approx((1 + 0.5 + 0) / 3)


def test_tie_aware_blocks_give_the_same_result(monkeypatch):
    from brcd.retrieval import metrics as metrics_module

    rng = np.random.default_rng(2)
    database, query = tied_codes(rng, 400, 16, 6), tied_codes(rng, 50, 16, 6)
    db_labels, q_labels = multi_hot(rng, 400, 5), multi_hot(rng, 50, 5)
    counts, rel, _ = full_ranking_statistics(query, database, pack_labels(q_labels), pack_labels(db_labels))
    whole = tie_aware_average_precision(counts, rel, 150)
    monkeypatch.setattr(metrics_module, "RAGGED_BLOCK", 7)
    np.testing.assert_allclose(tie_aware_average_precision(counts, rel, 150), whole, rtol=0, atol=1e-14)


def test_tie_aware_from_codes_matches_brute_force():
    rng = np.random.default_rng(11)
    database, query = tied_codes(rng, 7, 8, 3), tied_codes(rng, 4, 8, 3)
    db_labels, q_labels = multi_hot(rng, 7, 3, 0.4), multi_hot(rng, 4, 3, 0.5)
    dist, rel = ref_distances(query, database), ref_relevance(q_labels, db_labels)
    for k in (1, 3, 7):
        expected = np.mean([brute_force_tie_aware(dist[i], rel[i], k) for i in range(len(query))])
        metrics = retrieval_metrics(query, database, q_labels, db_labels, k)
        assert metrics[f"map@{k}_tie_aware"] == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------------- P@K, PR, ISD, NRA


def test_precision_at_k_hand_computed():
    # query 0 at distances 0,1,2,3 from items relevant 1,0,1,1
    database = pack([[0] * 8, [1] + [0] * 7, [1, 1] + [0] * 6, [1, 1, 1] + [0] * 5])
    query = pack([[0] * 8])
    labels_db = np.array([[1], [0], [1], [1]], dtype=np.uint8)
    metrics = retrieval_metrics(query, database, [[1]], labels_db, 2, precision_at=[1, 3, 4, 50])
    assert metrics["precision@k"] == {"1": 1.0, "2": 0.5, "3": pytest.approx(2 / 3), "4": 0.75}


def test_pr_curve_hand_computed():
    # query A: distances [0, 1, 1] relevant [1, 0, 1]; query B: distances [2, 2, 2] relevant [0, 1, 0]
    counts = np.array([[1, 2, 0], [0, 0, 3]])
    relevant = np.array([[1, 1, 0], [0, 0, 1]])
    pr = pr_by_radius(counts, relevant)
    assert pr["radius"] == [0, 1, 2]
    # radius 0: only A retrieves (1/1); radius 1: A 2/3, B nothing; radius 2: A 2/3, B 1/3
    assert pr["precision"] == pytest.approx([1.0, 2 / 3, 0.5])
    assert pr["retrieved_share"] == [0.5, 0.5, 1.0]
    assert pr["recall"] == pytest.approx([0.25, 0.5, 1.0])
    none = pr_by_radius(np.array([[0, 2]]), np.array([[0, 0]]))
    assert none["precision"][0] is None and none["recall"] == [None, None]


def test_histograms_from_codes_match_reference():
    rng = np.random.default_rng(5)
    database, query = tied_codes(rng, 300, 16, 20), tied_codes(rng, 25, 16, 20)
    db_labels, q_labels = multi_hot(rng, 300, 4), multi_hot(rng, 25, 4)
    q_masks, db_masks = pack_labels(q_labels), pack_labels(db_labels)
    counts, rel, _ = full_ranking_statistics(query, database, q_masks, db_masks)
    _, _, top_counts, top_rel = topk_statistics(query, database, q_masks, db_masks, 40)
    dist, relevance = ref_distances(query, database), ref_relevance(q_labels, db_labels)
    assert counts.shape == top_counts.shape == (len(query), 17)
    for i in range(len(query)):
        np.testing.assert_array_equal(counts[i], np.bincount(dist[i], minlength=17))
        np.testing.assert_array_equal(rel[i], np.bincount(dist[i][relevance[i]], minlength=17))
        # the top-K histograms: exact up to the 40th item's distance, 0 beyond
        radius = np.sort(dist[i])[39]
        np.testing.assert_array_equal(top_counts[i, : radius + 1], counts[i, : radius + 1])
        np.testing.assert_array_equal(top_rel[i, : radius + 1], rel[i, : radius + 1])
        assert not top_counts[i, radius + 1 :].any() and not top_rel[i, radius + 1 :].any()
    np.testing.assert_allclose(tie_aware_average_precision(top_counts, top_rel, 40),
                               tie_aware_average_precision(counts, rel, 40), rtol=0, atol=1e-14)


def test_isd_hand_computed():
    teacher = pack([[0] * 16, [1] * 16])
    student = pack([[1] * 4 + [0] * 12, [1] * 16])
    assert isd(teacher, student) == pytest.approx((4 / 16 + 0) / 2)


def test_nra_hand_computed():
    # teacher ranks database items 0,1,2,3 at distances 0,1,2,3; student query sees 3,2,1,0
    db = pack([[0] * 8, [1] + [0] * 7, [1, 1] + [0] * 6, [1, 1, 1] + [0] * 5])
    t_query = pack([[0] * 8])
    s_query = pack([[1, 1, 1] + [0] * 5])
    # top-2: teacher {0, 1}, student {3, 2} -> 0; top-3: {0,1,2} vs {3,2,1} -> 2/3
    assert nra_at_k((t_query, db), (s_query, db), 2) == 0.0
    assert nra_at_k((t_query, db), (s_query, db), 3) == pytest.approx(2 / 3)
    assert nra_at_k((t_query, db), (t_query, db), 4) == 1.0


def test_memory_stays_bounded():
    import tracemalloc

    rng = np.random.default_rng(0)
    database, query = tied_codes(rng, 20_000, 64, 500), tied_codes(rng, 1_000, 64, 500)
    db_labels = np.eye(10, dtype=np.uint8)[rng.integers(0, 10, 20_000)]
    q_labels = np.eye(10, dtype=np.uint8)[rng.integers(0, 10, 1_000)]
    tracemalloc.start()
    retrieval_metrics(query, database, q_labels, db_labels, 1000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    dense = len(query) * len(database) * 8  # one float64 queries x database matrix
    assert peak < dense / 2, f"peak {peak / 2**20:.0f} MiB"


# ----------------------------------------------------------------------------- wrong inputs are refused


def test_labels_must_be_zero_one_multi_hot():
    rng = np.random.default_rng(0)
    codes = pack(rng.integers(0, 2, (20, 16)))
    good = multi_hot(rng, 20, 5)
    plus_minus = good.astype(np.int8) * 2 - 1  # -1/+1: read as != 0, everything would be relevant
    with pytest.raises(DataError, match=r"database labels must be 0/1 multi-hot.*\[-1\].*\(labels > 0\)"):
        map_at_k(codes, codes, good, plus_minus, 5)
    with pytest.raises(DataError, match=r"query labels must be 0/1 multi-hot.*\[-1\]"):
        retrieval_metrics(codes, codes, plus_minus, good, 5)
    for bad in (good * 2, good + 0.5, np.where(good, np.nan, 0.0), good.astype(np.int64) - 1):
        with pytest.raises(DataError, match="must be 0/1 multi-hot"):
            pack_labels(bad)
    with pytest.raises(DataError, match="0/1 multi-hot labels, got an array of dtype <U1"):
        pack_labels(np.array([["a", "b"]]))
    # 0/1 in any dtype is fine and means the same
    reference = pack_labels(good)
    for same in (good.astype(bool), good.astype(np.float32), good.astype(np.int64)):
        np.testing.assert_array_equal(pack_labels(same), reference)


def test_unpacked_bits_are_not_taken_for_packed_codes():
    rng = np.random.default_rng(0)
    teacher_bits, student_bits = rng.integers(0, 2, (50, 64)), rng.integers(0, 2, (50, 64))
    unpacked_t, unpacked_s = teacher_bits.astype(np.uint8), student_bits.astype(np.uint8)
    # ISD of unpacked bytes would be 8x too small: refuse them, naming pack_codes
    with pytest.raises(DataError, match=r"teacher codes look like unpacked bits.*brcd.codes.pack_codes.*64-bit codes -> 8 bytes"):
        isd(unpacked_t, unpacked_s)
    with pytest.raises(DataError, match=r"student codes look like unpacked bits"):
        isd(pack(teacher_bits), unpacked_s)
    with pytest.raises(DataError, match="database codes look like unpacked bits"):
        topk(pack(teacher_bits), unpacked_s, 3)
    with pytest.raises(DataError, match="unpacked bits"):
        map_at_k(unpacked_t, unpacked_t, multi_hot(rng, 50, 3), multi_hot(rng, 50, 3), 5)
    with pytest.raises(DataError, match="unpacked bits"):
        hamming_module.SearchDatabase(unpacked_s)
    expected = (teacher_bits != student_bits).mean()
    assert isd(pack(teacher_bits), pack(student_bits)) == pytest.approx(expected)
    # unpacked 0/1 bytes hidden after many rows of real codes are still found
    mixed = np.concatenate([np.zeros((100, 64), np.uint8), unpacked_s])
    with pytest.raises(DataError, match="unpacked bits"):
        hamming_module.as_packed(mixed)


def test_packed_codes_with_small_bytes_are_not_mistaken_for_unpacked_bits():
    rng = np.random.default_rng(1)
    # widths that are not a multiple of 8 (16- and 32-bit codes) can never be unpacked bits
    for width in (2, 4):
        hamming_module.as_packed(rng.integers(0, 2, (10, width), dtype=np.uint8))
    # all-zero codes (every bit -1) are packed codes
    hamming_module.as_packed(np.zeros((10, 8), np.uint8))
    # real packed 64/128-bit codes: a byte above 1 in the first rows settles it
    codes = rng.integers(0, 256, (1000, 16), dtype=np.uint8)
    codes[:200] = rng.integers(0, 2, (200, 16))  # even if the first rows are unusual (full scan)
    hamming_module.as_packed(codes)


def test_pack_codes_rejects_non_finite_values():
    from brcd.codes import pack_codes

    logits = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    np.testing.assert_array_equal(pack_codes(logits), pack(logits >= 0))
    for bad in (np.nan, np.inf, -np.inf):
        broken = logits.copy()
        broken[2, 5] = bad
        with pytest.raises(DataError, match=rf"non-finite values \(e.g. {bad} at row 2, bit 5\).*retrain"):
            pack_codes(broken)


def test_tie_aware_ap_rejects_bad_k_and_inconsistent_histograms():
    counts = np.array([[1, 2, 3], [2, 2, 2]])
    relevant = np.array([[1, 1, 0], [0, 2, 1]])
    assert tie_aware_average_precision(counts, relevant, 3).shape == (2,)
    for k in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            tie_aware_average_precision(counts, relevant, k)
    with pytest.raises(ValueError, match=r"more relevant items than items .*query 0, distance 0: 2 relevant of 1"):
        tie_aware_average_precision(counts, np.array([[2, 1, 0], [0, 2, 1]]), 3)
    with pytest.raises(ValueError, match="negative item counts"):
        tie_aware_average_precision(np.array([[3, -1, 3], [2, 2, 2]]), np.zeros((2, 3), int), 3)
    with pytest.raises(ValueError, match="negative relevant counts"):
        tie_aware_average_precision(counts, -relevant, 3)
    with pytest.raises(ValueError, match="same shape"):
        tie_aware_average_precision(counts, relevant[:, :2], 3)
    with pytest.raises(ValueError, match="k = 7 exceeds the database size"):
        tie_aware_average_precision(counts, relevant, 7)
