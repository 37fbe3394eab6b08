"""Exact Hamming search over packed binary codes (SPEC §6).

Codes are packed ``uint8`` rows (N x L/8), most significant bit first, as
:func:`brcd.codes.pack_codes` writes them. Everything here is exact.

Tie policy (:data:`TIE_POLICY`): the ranking is by Hamming distance
ascending; items at equal distance keep database order (the order of the
database rows, which is ascending dataset index in code files). So the
ranking is exactly ``np.argsort(distances, kind="stable")``.

Two kernels, both chunked over queries so that no dense queries x database
matrix is ever built:

- :func:`topk` uses faiss' counting top-K (``hammings_knn_mc``): per query,
  one list per distance value, each filled in database order, so its result
  is the stable ranking truncated at K (the tests check this against
  ``np.argsort(kind="stable")``). Codes are zero-padded to whole 64-bit words,
  which leaves distances unchanged and selects faiss' popcount kernels.
- :func:`distance_chunks` / :func:`block_distances` give blocks of all
  distances (numpy popcount on 64-bit words) for metrics that need the whole
  database (full-ranking mAP, precision-recall by radius, histograms).

Queries with identical codes are searched once. Blocks of queries run on a
pool of :func:`search_threads` threads (faiss and numpy release the GIL), each
block single-threaded: unlike OpenMP's barriers this keeps both cores busy
when another process takes one of them for a while.

This module must not import torch: evaluation jobs should start fast.
"""
from __future__ import annotations

import collections
import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import faiss
import numpy as np

from brcd.errors import ConfigError, DataError

TIE_POLICY = "hamming distance ascending, ties by database order"

#: target size of one chunk's working memory (bytes); keeps peaks small and in cache
WORK_BYTES = 32 << 20
#: pairs per block of the numpy distance kernel (a few MB: stays in cache)
DISTANCE_BLOCK_PAIRS = 1 << 18


def as_packed(codes, what: str = "codes") -> np.ndarray:
    """Validate packed codes: a non-empty 2-D uint8 array, returned C-contiguous."""
    array = np.asarray(codes)
    if array.dtype != np.uint8 or array.ndim != 2:
        raise DataError(
            f"{what}: expected packed codes (N x L/8 uint8), got {array.dtype} array of shape {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{what} are empty (shape {array.shape}); rerun the step that encodes them")
    return np.ascontiguousarray(array)


def check_pair(query, database) -> tuple[np.ndarray, np.ndarray]:
    query, database = as_packed(query, "query codes"), as_packed(database, "database codes")
    if query.shape[1] != database.shape[1]:
        raise DataError(
            f"query codes have {query.shape[1] * 8} bits but database codes have {database.shape[1] * 8}; "
            "use code files of the same code length"
        )
    return query, database


def code_bits(packed: np.ndarray) -> int:
    return int(packed.shape[1]) * 8


def pad_to_words(packed: np.ndarray) -> np.ndarray:
    """Zero-pad rows to a multiple of 8 bytes (XOR of the padding is 0, distances unchanged)."""
    width = -(-packed.shape[1] // 8) * 8
    if width == packed.shape[1]:
        return np.ascontiguousarray(packed)
    out = np.zeros((packed.shape[0], width), dtype=np.uint8)
    out[:, : packed.shape[1]] = packed
    return out


def as_words(packed: np.ndarray) -> np.ndarray:
    """Packed codes as native-endian uint64 words (N x W); bit order is irrelevant to popcount."""
    return pad_to_words(packed).view(np.uint64)


def distance_dtype(bits: int) -> np.dtype:
    return np.dtype(np.uint8 if bits <= 255 else np.uint16)


def search_threads() -> int:
    """Threads the search uses: faiss' OpenMP setting (OMP_NUM_THREADS,
    :func:`set_search_threads`, default all cores)."""
    return int(faiss.omp_get_max_threads())


def set_search_threads(threads: int) -> None:
    faiss.omp_set_num_threads(int(threads))


def parallel_map(function: Callable, items: Iterable, threads: int) -> Iterator:
    """``map(function, items)`` on a pool of ``threads`` threads, results in order.

    Blocks go to whichever thread is free (faiss releases the GIL), so a
    thread slowed down by other processes does not hold up the others, as it
    would at an OpenMP barrier; each task runs single-threaded. At most
    2 x threads results wait unconsumed.
    """
    def task(item):
        faiss.omp_set_num_threads(1)  # this worker thread only
        return function(item)

    items = iter(items)
    with ThreadPoolExecutor(threads) as pool:
        pending = collections.deque(pool.submit(task, item) for item in itertools.islice(items, 2 * threads))
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(items, 1):
                pending.append(pool.submit(task, item))
            yield result


def check_topk(k: int, database_size: int, what: str = "--topk") -> int:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"{what} must be a positive integer; got {k!r}")
    if k > database_size:
        raise ConfigError(
            f"{what} = {k} is larger than the database ({database_size} codes); "
            f"lower it to at most {database_size} (config `datasets.<name>.topk`) or use a larger database"
        )
    return int(k)


def _query_chunk(bits: int, k: int, n_queries: int) -> int:
    """Queries per faiss call: its counting state is (bits + 1) x k ids per query.

    Small blocks keep that state in cache (measured: 8-32 beat 64-128).
    """
    per_query = (bits + 1) * k * 8
    return int(max(1, min(n_queries, 16, WORK_BYTES // per_query)))


def topk(query, database, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` database rows of every query's ranking (:data:`TIE_POLICY`).

    Returns ``(indices, distances)``: int64 row numbers into ``database`` and
    int32 Hamming distances, both Q x k, in ranking order.
    """
    query, database = check_pair(query, database)
    k = check_topk(k, len(database), "k")
    indices = np.empty((len(query), k), dtype=np.int64)
    distances = np.empty((len(query), k), dtype=np.int32)
    for rows, ids, dist in iter_topk(query, database, k):
        indices[rows], distances[rows] = ids, dist
    return indices, distances


def iter_topk(query, database, k: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`topk` in blocks: yields ``(rows, indices, distances)`` for query rows ``rows``.

    Every query row appears in exactly one block, not necessarily in order:
    queries with identical codes have identical rankings, so each distinct
    code is searched once (short codes repeat a lot) and its result is
    copied to all its queries. Blocks are small (at most 16 distinct codes),
    so callers can consume each block while it is still in cache; blocks are
    searched on :func:`search_threads` threads.
    """
    query, database = check_pair(query, database)
    k = check_topk(k, len(database), "k")
    q_words, db_words = pad_to_words(query), pad_to_words(database)
    distinct, inverse = np.unique(q_words, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    by_code = np.argsort(inverse, kind="stable")  # query rows grouped by distinct code
    code_end = np.cumsum(np.bincount(inverse, minlength=len(distinct)))
    bits = q_words.shape[1] * 8
    search = _search_by_sort if (bits + 1) * k * 8 > 4 * WORK_BYTES else _search_by_counting
    chunk = _query_chunk(bits, k, len(distinct))
    blocks = [(start, min(start + chunk, len(distinct))) for start in range(0, len(distinct), chunk)]
    threads = min(search_threads(), len(blocks))

    def search_block(block):
        return search(distinct[block[0] : block[1]], db_words, k)

    results = map(search_block, blocks) if threads == 1 else parallel_map(search_block, blocks, threads)
    for (start, stop), (indices, distances) in zip(blocks, results):
        rows = by_code[(code_end[start - 1] if start else 0) : code_end[stop - 1]]
        local = inverse[rows] - start
        yield rows, indices[local], distances[local]


def _search_by_counting(query_words: np.ndarray, db_words: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss' counting top-K: one list per distance, filled in database order."""
    block = np.ascontiguousarray(query_words)
    distances = np.empty((len(block), k), dtype=np.int32)
    indices = np.empty((len(block), k), dtype=np.int64)
    faiss.hammings_knn_mc(
        faiss.swig_ptr(block), faiss.swig_ptr(db_words), len(block), len(db_words), k, block.shape[1],
        faiss.swig_ptr(distances), faiss.swig_ptr(indices),
    )
    return indices, distances


def _search_by_sort(query_words: np.ndarray, db_words: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable argsort of all distances: when faiss' counting state would be too large (k near a big database)."""
    indices = np.empty((len(query_words), k), dtype=np.int64)
    distances = np.empty((len(query_words), k), dtype=np.int32)
    for start, stop, dist in distance_chunks(query_words, db_words):
        for row in range(stop - start):
            order = np.argsort(dist[row], kind="stable")[:k]
            indices[start + row], distances[start + row] = order, dist[row, order]
    return indices, distances


def rows_per_chunk(database_size: int, bytes_per_pair: int = 24) -> int:
    """Queries per distance chunk so that a chunk's working arrays stay near :data:`WORK_BYTES`."""
    return int(max(1, WORK_BYTES // (database_size * bytes_per_pair)))


def distance_chunks(query, database, rows: int | None = None,
                    threads: int = 1) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, distances)`` with distances of queries start..stop-1 to every database row.

    ``distances`` is (stop - start) x N, uint8 (uint16 beyond 255 bits).
    With ``threads`` > 1 chunks are computed ahead on a thread pool.
    """
    query, database = check_pair(query, database)
    q_words, db_words = as_words(query), as_words(database)
    rows = rows or rows_per_chunk(len(db_words))
    ranges = [(start, min(start + rows, len(q_words))) for start in range(0, len(q_words), rows)]

    def compute(bounds):
        return block_distances(q_words[bounds[0] : bounds[1]], db_words, code_bits(query))

    threads = min(threads, len(ranges))
    results = map(compute, ranges) if threads <= 1 else parallel_map(compute, ranges, threads)
    for (start, stop), out in zip(ranges, results):
        yield start, stop, out


def block_distances(q_words: np.ndarray, db_words: np.ndarray, bits: int) -> np.ndarray:
    """All distances between a few queries and the database, from uint64 words."""
    dtype = distance_dtype(bits)
    n_db = len(db_words)
    out = np.empty((len(q_words), n_db), dtype=dtype)
    # Sub-blocks of the database keep the uint64 XOR temporaries in cache.
    db_block = max(1, DISTANCE_BLOCK_PAIRS // max(1, len(q_words)))
    for lo in range(0, n_db, db_block):
        hi = min(lo + db_block, n_db)
        block = np.bitwise_count(q_words[:, 0, None] ^ db_words[None, lo:hi, 0]).astype(dtype, copy=False)
        for w in range(1, q_words.shape[1]):
            block += np.bitwise_count(q_words[:, w, None] ^ db_words[None, lo:hi, w])
        out[:, lo:hi] = block
    return out


def hamming_distances(query, database) -> np.ndarray:
    """All distances, Q x N (small inputs: tests and examples)."""
    query, database = check_pair(query, database)
    out = np.empty((len(query), len(database)), dtype=distance_dtype(code_bits(query)))
    for start, stop, dist in distance_chunks(query, database):
        out[start:stop] = dist
    return out


def paired_distances(a, b) -> np.ndarray:
    """Distance between row i of ``a`` and row i of ``b`` (same images, two encoders)."""
    a, b = check_pair(a, b)
    if len(a) != len(b):
        raise DataError(f"paired codes need the same number of rows; got {len(a)} and {len(b)}")
    return np.bitwise_count(as_words(a) ^ as_words(b)).sum(axis=1, dtype=np.int64)
