"""Compiled (numba) kernels of the exact Hamming search: O(N) per query, no sort.

The ranking is :data:`brcd.retrieval.hamming.TIE_POLICY`: distance ascending,
ties by database order. Its counting form, used throughout: with ``count[d]``
items at distance d, the item at database row j and distance d has rank
``Σ_{d' < d} count[d'] + (rows before j at distance d)``, so a pass in
database order knows every item's rank without sorting anything.

- :func:`topk_block`: the first ``depth`` items of each ranking. A radius
  that very likely holds ``depth`` items is guessed from a small sample;
  one branch-free pass (XOR, popcount, compare) collects the rows within it;
  the few candidates are put in ranking order by a counting sort. A guess
  that holds too few rows is detected and the pass repeated with the
  largest radius, so the result never depends on the sample.
- :func:`ranked_statistics`: AP@k and hits at cut-offs from ranked ids.
- :func:`full_statistics`: the whole ranking (full-database AP, complete
  histograms): one pass for distances and their histograms, one for ranks.

Inputs are C-contiguous arrays: codes as uint64 words, zero-padded (padding
XORs to 0), and label masks of unsigned words (bit c = label c; relevance =
a shared bit; :func:`brcd.retrieval.metrics.pack_labels`). All kernels
release the GIL, so blocks of queries run on threads.
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

#: compiled code is cached next to this file (or in NUMBA_CACHE_DIR): only a first run compiles
_JIT = {"nogil": True, "cache": True, "boundscheck": False}


@intrinsic
def _popcount(typingctx, word):
    """Set bits of a uint64 as an int64 (numba would turn uint64/int64 mixes into floats):
    one ``popcnt`` instruction (LLVM ``ctpop``)."""
    signature = types.int64(types.uint64)

    def codegen(context, builder, sig, args):
        return builder.ctpop(args[0])

    return signature, codegen


@njit(inline="always", **_JIT)
def _distance(query_words, db_words, row):
    if query_words.shape[0] == 1:  # codes of up to 64 bits: one word (lets LLVM drop the loop)
        return _popcount(query_words[0] ^ db_words[row, 0])
    d = 0
    for w in range(query_words.shape[0]):
        d += _popcount(query_words[w] ^ db_words[row, w])
    return d


@njit(inline="always", **_JIT)
def _shares_label(query_mask, db_masks, row):
    shared = 0
    for w in range(query_mask.shape[0]):
        shared |= (query_mask[w] & db_masks[row, w]) != 0
    return shared


#: database rows whose distances estimate a query's final radius (see :func:`_radius_guess`)
RADIUS_SAMPLE = 4096


@njit(**_JIT)
def _radius_guess(query, db_words, depth, histogram):
    """A radius that very likely holds ``depth`` items, from the distances of a strided sample.

    Asks the sample for its expected count of such items plus three standard
    deviations of a Poisson count, plus one. It only saves work: a guess that
    turns out too small is detected and the query is scanned again from the
    largest radius.
    """
    n_db = db_words.shape[0]
    stride = max(1, n_db // RADIUS_SAMPLE)
    histogram[:] = 0
    sampled = 0
    for row in range(0, n_db, stride):
        histogram[_distance(query, db_words, row)] += 1
        sampled += 1
    expected = depth * sampled / n_db
    wanted = expected + 3.0 * np.sqrt(expected) + 1.0
    total = 0
    for d in range(histogram.shape[0]):
        total += histogram[d]
        if total >= wanted:
            return d
    return histogram.shape[0] - 1


@njit(**_JIT)
def _within(query, db_words, radius, out_rows):
    """Rows within ``radius`` of the query, in database order, into ``out_rows``; returns their number.

    Branch-free: every row is stored and the write position advances only
    for rows within the radius. They are rare and scattered, so a branch on
    them would be mispredicted.
    """
    found = 0
    if query.shape[0] == 1:  # codes of up to 64 bits: one contiguous word per row
        word, column = query[0], db_words.reshape(-1)
        for row in range(column.shape[0]):
            out_rows[found] = row
            found += _popcount(word ^ column[row]) <= radius
        return found
    for row in range(db_words.shape[0]):
        out_rows[found] = row
        found += _distance(query, db_words, row) <= radius
    return found


@njit(**_JIT)
def _rank_candidates(query, mask, db_words, db_masks, depth, rows, size, dist, count, rel, starts, ranked_rows,
                     ranked_distances):
    """Rank the candidates (every row within a radius holding >= ``depth`` items, in database order).

    Fills the histograms up to the final radius (the depth-th item's
    distance; farther buckets 0), and ``ranked_rows``/``ranked_distances``
    with the first ``depth`` items by a counting sort: each distance's run
    starts after all closer items (``starts``: scratch of L+1). Branch-free
    like :func:`_within`: candidates beyond the final radius are interleaved
    at random with the others; whatever is not ranked is written to the
    spare last slot of ``ranked_*`` (depth + 1 long).
    """
    count[:] = 0
    rel[:] = 0
    for i in range(size):
        d = _distance(query, db_words, rows[i])
        dist[i] = d
        count[d] += 1
    radius, within = 0, count[0]  # the final radius: the first holding depth items
    while within < depth:
        radius += 1
        within += count[radius]
    count[radius + 1 :] = 0
    for i in range(size):
        d = dist[i]
        rel[d] += _shares_label(mask, db_masks, rows[i]) & (d <= radius)
    rel[radius + 1 :] = 0
    slot = 0
    for d in range(radius + 1):
        starts[d] = slot
        slot += count[d]
    for d in range(radius + 1, count.shape[0]):
        starts[d] = depth  # farther than the final radius: never ranked
    for i in range(size):
        d = dist[i]
        keep = starts[d] < depth
        target = starts[d] if keep else depth
        ranked_rows[target] = rows[i]
        ranked_distances[target] = d
        starts[d] += keep


@njit(**_JIT)
def topk_block(query_words, db_words, query_masks, db_masks, depth, out_ids, out_distances, counts, relevant,
               candidates, candidate_distances):
    """First ``depth`` items of each query's ranking, and the histograms that decide them.

    Writes ``out_ids``/``out_distances`` (Q x depth, ranking order) and
    ``counts``/``relevant`` (Q x L+1): items and relevant items (label masks
    share a bit; zero-width masks: none) at each distance up to the radius of
    the depth-th item; farther buckets are 0. ``candidates`` and
    ``candidate_distances`` are scratch arrays of N int64 (allocated by the
    caller, so that its memory accounting sees them).

    Per query: a radius guessed from a sample (:func:`_radius_guess`), one
    branch-free pass collecting the rows within it, then the candidates are
    ranked. If the guess holds fewer than ``depth`` rows, the pass is
    repeated with the largest radius, which holds every row.
    """
    buckets = counts.shape[1]
    histogram = np.empty(buckets, dtype=np.int64)
    ranked_rows = np.empty(depth + 1, dtype=np.int64)
    ranked_distances = np.empty(depth + 1, dtype=np.int64)
    for q in range(query_words.shape[0]):
        query = query_words[q]
        size = _within(query, db_words, _radius_guess(query, db_words, depth, histogram), candidates)
        if size < depth:
            size = _within(query, db_words, buckets - 1, candidates)
        _rank_candidates(query, query_masks[q], db_words, db_masks, depth, candidates, size, candidate_distances,
                         counts[q], relevant[q], histogram, ranked_rows, ranked_distances)
        out_ids[q, :] = ranked_rows[:depth]
        out_distances[q, :] = ranked_distances[:depth]


@njit(**_JIT)
def ranked_statistics(ids, query_masks, db_masks, k, cutoffs, ap_k, hits):
    """From ranked ids (Q x depth): AP@k (0 without a relevant item in the top k) and
    ``hits[q, c]``, the relevant items among the first ``cutoffs[c]``."""
    for q in range(ids.shape[0]):
        found, found_k, precision_sum = 0, 0, 0.0
        hits[q, :] = 0
        for position in range(ids.shape[1]):
            if _shares_label(query_masks[q], db_masks, ids[q, position]):
                found += 1
                if position < k:
                    found_k += 1
                    precision_sum += found / (position + 1.0)
                for c in range(cutoffs.shape[0]):
                    if position < cutoffs[c]:
                        hits[q, c] += 1
        ap_k[q] = precision_sum / found_k if found_k else 0.0


@njit(**_JIT)
def full_statistics(query_words, db_words, query_masks, db_masks, counts, relevant, ap_all, distances, is_relevant):
    """Complete histograms (Q x L+1) and the AP of each query's whole ranking.

    ``distances`` (N int64) and ``is_relevant`` (N uint8) are scratch arrays.
    """
    n_db = db_words.shape[0]
    buckets = counts.shape[1]
    rank = np.empty(buckets, dtype=np.int64)  # next rank in each distance's run
    found = np.empty(buckets, dtype=np.int64)  # relevant items ranked before it
    for q in range(query_words.shape[0]):
        query, mask = query_words[q], query_masks[q]
        count, rel = counts[q], relevant[q]
        count[:] = 0
        rel[:] = 0
        for row in range(n_db):
            d = _distance(query, db_words, row)
            flag = _shares_label(mask, db_masks, row)
            distances[row] = d
            is_relevant[row] = flag
            count[d] += 1
            rel[d] += flag
        ranked, relevant_total = 0, 0
        for d in range(buckets):
            rank[d], found[d] = ranked, relevant_total
            ranked += count[d]
            relevant_total += rel[d]
        precision_sum = 0.0
        for row in range(n_db):
            d = distances[row]
            position = rank[d]
            rank[d] += 1
            if is_relevant[row]:
                found[d] += 1
                precision_sum += found[d] / (position + 1.0)
        ap_all[q] = precision_sum / relevant_total if relevant_total else 0.0
