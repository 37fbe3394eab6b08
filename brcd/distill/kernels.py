"""Compiled (numba) kernels of the memory-bank losses (crd, crcd, packd) on CPU tensors.

A step of these losses reads a few hundred bank rows per image: 32,064 rows
at B = 64 and 500 negatives. In torch that is either a matrix product with
the whole bank (10x the products needed for 5,000 rows) or a fresh copy of
the rows read (16 MB per bank and step); these kernels read the rows in
place instead:

- :func:`top_keys`: the positions of the ``count`` largest keys of each row,
  the draw of ``sample_negatives`` (the same set as ``torch.topk``), by a
  histogram of the keys instead of a selection;
- :func:`bank_dots`: ``table[rows[b, k]] . sample[b, s]`` (its transpose, the
  backward pass, is torch's ``embedding_bag``);
- :func:`relation_tables`, :func:`relation_forward` and
  :func:`relation_backward`: crcd's dot-product tables per (bank row,
  anchor), its relation cosines per (image, anchor, bank row) from them, and
  their gradient's sums (:class:`brcd.distill.crcd._RelationCosines`).

Inputs are C-contiguous numpy views of CPU tensors (``Tensor.numpy()``, no copy).
Sums over the 128 embedding dimensions may be reassociated (vectorised) and their
multiply-adds fused: deterministic for one compiled kernel on one machine. crcd's are float64 (its relations can be short: see
:func:`brcd.distill.crcd.relation_cosines`).
"""
from __future__ import annotations

import numpy as np
from numba import njit

#: compiled code is cached next to this file (or in NUMBA_CACHE_DIR): only a first run compiles
_JIT = {"nogil": True, "cache": True, "boundscheck": False}
#: sums may be reordered (SIMD) and multiply-adds fused; no other fast-math licence
_SUMS = {**_JIT, "fastmath": {"reassoc", "contract"}}
#: histogram buckets of :func:`_largest` (about one candidate key per bucket)
_BUCKETS = 1024


@njit(**_JIT)
def top_keys(keys, count, out):
    """``out[b]`` = the columns of the ``count`` largest ``keys[b]`` (keys in [0, 1)), in no fixed order.

    Returns False, leaving ``out`` unspecified, when a row's ``count``-th largest key has a tie
    that the cut would split: which of the tied columns is drawn is then ``torch.topk``'s choice,
    and the caller asks it. Otherwise the set is unique, so it is topk's. The keys are uniform, so
    the ``count`` largest lie above the quantile ``low`` but for a chance of 6 standard deviations;
    a row where they do not is searched whole.
    """
    rows, width = keys.shape
    low = max(0.0, 1.0 - (count + 6.0 * np.sqrt(count) + 16.0) / width)
    values = np.empty(width, np.float64)
    index = np.empty(width, np.int64)
    for b in range(rows):
        n = _candidates(keys[b], low, values, index)
        floor = low
        if n < count:
            floor = 0.0
            n = _candidates(keys[b], floor, values, index)
        if not _largest(values[:n], index[:n], floor, count, out[b]):
            return False
    return True


@njit(**_JIT)
def _candidates(row, low, values, index):
    """The keys of ``row`` that are at least ``low``, and their columns; how many. Branch-free (every
    key is written, the count advances only past the kept ones): a random 1-in-8 branch mispredicts."""
    n = 0
    for i in range(row.shape[0]):
        values[n] = row[i]
        index[n] = i
        n += row[i] >= low
    return n


@njit(**_JIT)
def _largest(values, index, low, count, out):
    """``out`` = the ``index`` of the ``count`` largest ``values`` (all in [low, 1)); False on a tie at the cut.

    A histogram of the values finds the bucket of the cut (bucket order is value order: the
    bucket is a monotone function of the value); only that bucket's few values are sorted.
    """
    scale = _BUCKETS / (1.0 - low)
    histogram = np.zeros(_BUCKETS, np.int64)
    for i in range(values.shape[0]):
        histogram[min(int((values[i] - low) * scale), _BUCKETS - 1)] += 1
    above, cut = 0, _BUCKETS - 1
    while above + histogram[cut] < count:
        above += histogram[cut]
        cut -= 1
    taken, n = 0, 0
    boundary = np.empty(histogram[cut], np.float64)
    columns = np.empty(histogram[cut], np.int64)
    for i in range(values.shape[0]):
        bucket = min(int((values[i] - low) * scale), _BUCKETS - 1)
        if bucket > cut:
            out[taken] = index[i]
            taken += 1
        elif bucket == cut:
            boundary[n] = values[i]
            columns[n] = index[i]
            n += 1
    order = np.argsort(-boundary)
    need = count - above
    if need < n and boundary[order[need - 1]] == boundary[order[need]]:
        return False
    for i in range(need):
        out[taken + i] = columns[order[i]]
    return True


@njit(**_SUMS)
def bank_dots(table, rows, sample, out):
    """``out[b, s, k] = table[rows[b, k]] . sample[b, s]``, summed in float32 like the matrix product it
    replaces (these are unit vectors' cosines, no cancellation to guard against; float64 sums cost a
    step 0.35 ms more at B = 64, K = 501 on one core)."""
    batch, count = rows.shape
    for b in range(batch):
        for s in range(sample.shape[1]):
            vector = sample[b, s]
            for k in range(count):
                row = table[rows[b, k]]
                acc = np.float32(0.0)
                for d in range(row.shape[0]):
                    acc += row[d] * vector[d]
                out[b, s, k] = acc


@njit(**_SUMS)
def relation_tables(table, shifted, neg_dots, w_norm2):
    """crcd's tables per bank row r and anchor a, in float64: ``neg_dots[r, a] = -table[r] . shifted[a]`` and
    ``w_norm2[r, a] = |table[r] - shifted[a]|^2``, expanded as |w|^2 - 2 w . A' + |A'|^2 (each row read once)."""
    anchors = shifted.shape[0]
    norms = np.empty(anchors, np.float64)
    for a in range(anchors):
        norms[a] = (shifted[a] * shifted[a]).sum()
    for r in range(table.shape[0]):
        row = table[r]
        squared = 0.0
        for d in range(row.shape[0]):
            squared += np.float64(row[d]) * np.float64(row[d])
        for a in range(anchors):
            dot = 0.0
            for d in range(row.shape[0]):
                dot += np.float64(row[d]) * shifted[a, d]
            neg_dots[r, a] = -dot
            w_norm2[r, a] = squared - 2.0 * dot + norms[a]


@njit(**_SUMS)
def relation_forward(table, rows, sample, neg_dots, inv_w, a_v, inv_v, zero, ones, cosine):
    """crcd's relation cosines from their tables (``_RelationCosines.forward``): for every b, a, j with
    r = rows[b, j], ``cosine[b, a, j] = clamp((neg_dots[r, a] + table[r] . sample[b] - a_v[b, a]) *
    inv_w[r, a] * inv_v[b, a], -1, 1)``, all in float64; where row r holds anchor a's vector
    (``zero[r, a]``), ``ones[b, a]``. The tables are (rows, anchors): an entry's row r brings the
    values of every anchor in one cache line."""
    batch, count = rows.shape
    for b in range(batch):
        for j in range(count):
            r = rows[b, j]
            row = table[r]
            w_v = 0.0
            for d in range(row.shape[0]):
                w_v += np.float64(row[d]) * sample[b, d]
            for a in range(neg_dots.shape[1]):
                value = min(max((neg_dots[r, a] + w_v - a_v[b, a]) * (inv_w[r, a] * inv_v[b, a]), -1.0), 1.0)
                cosine[b, a, j] = ones[b, a] if zero[r, a] else value


@njit(**_SUMS)
def relation_backward(grad, cosine, table, rows, inv_w, inv_v, zero, h_a, g_cos, g_ones, w_part):
    """The sums of ``_RelationCosines.backward``, in float64: with h = grad inv_w[r, a] inv_v[b, a]
    (0 on the zero relations), ``h_a[b, a] = sum_j h``, ``g_cos[b, a] = sum_j grad * cosine``,
    ``g_ones[b, a]`` the sum of grad over the zero relations and ``w_part[b] = sum_j (sum_a h[b, a, j])
    table[rows[b, j]]``. ``inv_w`` is 0 on the zero relations (so h is, without a branch)."""
    batch, anchors, count = grad.shape
    h_w = np.empty(count, np.float64)
    acc = np.empty(table.shape[1], np.float64)
    for b in range(batch):
        h_w[:] = 0.0
        for a in range(anchors):
            sum_h, sum_c = 0.0, 0.0
            inv = inv_v[b, a]
            for j in range(count):
                g = np.float64(grad[b, a, j])
                h = g * (inv_w[rows[b, j], a] * inv)
                h_w[j] += h
                sum_h += h
                sum_c += g * cosine[b, a, j]
            h_a[b, a] = sum_h
            g_cos[b, a] = sum_c
            g_ones[b, a] = 0.0
        acc[:] = 0.0
        for j in range(count):
            r = rows[b, j]
            row = table[r]
            for d in range(acc.shape[0]):
                acc[d] += h_w[j] * np.float64(row[d])
            for a in range(anchors):
                if zero[r, a]:
                    g_ones[b, a] += grad[b, a, j]
        w_part[b] = acc
