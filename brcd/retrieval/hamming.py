"""Exact Hamming search over packed binary codes (SPEC §6).

Codes are packed ``uint8`` rows (N x L/8), most significant bit first, as
:func:`brcd.codes.pack_codes` writes them. Everything here is exact.

Tie policy (:data:`TIE_POLICY`): the ranking is by Hamming distance
ascending; items at equal distance keep database order (the order of the
database rows, which is ascending dataset index in code files). So the
ranking is exactly ``np.argsort(distances, kind="stable")``.

Search engines (:data:`SEARCH_ENGINES`, both exact, same tie policy, checked
against ``np.argsort(kind="stable")`` in the tests):

- ``counting`` (default): the compiled kernels of
  :mod:`brcd.retrieval.kernels`: per query one branch-free pass over the
  database within a radius guessed from a sample, then a counting sort of
  the few candidates. O(N) per query, O(N) scratch, no sort; it also yields
  the distance histograms and relevance counts the metrics need.
- ``faiss``: faiss' counting top-K (``hammings_knn_mc``), one list per
  distance filled in database order; for comparisons
  (``brcd time-search --engine faiss``).

Every search runs in blocks of queries, so no dense queries x database
matrix is ever built. Blocks run on a pool of :func:`search_threads` threads
(the kernels release the GIL), each block single-threaded: unlike OpenMP's
barriers this keeps both cores busy when another process takes one of them
for a while.

This module must not import torch: evaluation jobs should start fast.
"""
from __future__ import annotations

import collections
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import numpy as np

from brcd.errors import ConfigError, DataError
from brcd.registry import Registry
from brcd.retrieval import kernels
from brcd.runtime import usable_cpus

TIE_POLICY = "hamming distance ascending, ties by database order"

#: queries per block of the counting kernels (each block has O(N) scratch)
QUERY_BLOCK = 32
#: target size of one faiss call's counting state (bytes)
FAISS_STATE_BYTES = 32 << 20

SEARCH_ENGINES: Registry[Callable] = Registry("search engine", "--engine")
DEFAULT_ENGINE = "counting"
_threads: int | None = None


#: rows the unpacked-bits check looks at first: one byte above 1 there settles it in O(1)
UNPACKED_CHECK_ROWS = 64


def looks_unpacked(array: np.ndarray) -> bool:
    """Whether a 2-D uint8 array looks like unpacked 0/1 bits rather than packed codes.

    The rule: its width is a multiple of 8 (a plausible bit count: code
    lengths are multiples of 8) and every byte is 0 or 1, at least one being
    1. Unpacked bits look like this (unless every bit is 0). Packed codes only do when every
    byte of every row is 0x00 or 0x01, i.e. only the last bit of each byte is
    ever +1: for codes of 64 bits or more (packed width 8, 16, ...; shorter
    codes have a width that is not a multiple of 8 and are never flagged)
    that has probability about (1/128)^(8 N) for N rows of balanced codes,
    so in practice only a deliberately built array trips it. All-zero arrays
    (every code all -1) are not flagged.

    Cost: the first :data:`UNPACKED_CHECK_ROWS` rows are looked at first, and
    a byte above 1 there (real packed codes) ends the check; only arrays
    whose first rows are all 0/1 are scanned in full (one vectorised max, no copy).
    """
    if array.shape[1] % 8:
        return False
    if array[:UNPACKED_CHECK_ROWS].max() > 1:
        return False
    return bool(array.max() == 1)


def as_packed(codes, what: str = "codes") -> np.ndarray:
    """Validate packed codes: a non-empty 2-D uint8 array, returned C-contiguous.

    Unpacked 0/1 bits stored as uint8 are rejected (:func:`looks_unpacked`):
    they would search the same ranking but give 8x too small distances.
    """
    array = np.asarray(codes)
    if array.dtype != np.uint8 or array.ndim != 2:
        raise DataError(
            f"{what}: expected packed codes (N x L/8 uint8), got {array.dtype} array of shape {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{what} are empty (shape {array.shape}); rerun the step that encodes them")
    if looks_unpacked(array):
        raise DataError(
            f"{what} look like unpacked bits, one 0/1 byte per bit ({array.shape[1]} bytes per row, every "
            f"byte 0 or 1), not packed codes: pack them with brcd.codes.pack_codes (N x L/8 bytes, "
            f"{array.shape[1]}-bit codes -> {array.shape[1] // 8} bytes per row); distances would be 8x too small"
        )
    return np.ascontiguousarray(array)


def check_pair(query, database) -> tuple[np.ndarray, np.ndarray]:
    query, database = as_packed(query, "query codes"), as_packed(database, "database codes")
    if query.shape[1] != database.shape[1]:
        raise DataError(
            f"query codes have {query.shape[1] * 8} bits but database codes have {database.shape[1] * 8}; "
            "use code files of the same code length"
        )
    return query, database


class SearchDatabase:
    """Database codes prepared once for many searches: zero-padded to whole 64-bit words.

    Like adding codes to a faiss index. Every search function also takes a
    plain code array and prepares it per call, which for short codes costs a
    copy of the database; repeated searches should prepare it once.
    """

    def __init__(self, codes):
        self.codes = as_packed(codes, "database codes")
        self.words = as_words(self.codes)

    def __len__(self) -> int:
        return len(self.codes)



def search_pair(query, database) -> tuple[np.ndarray, SearchDatabase]:
    """Checked query codes and the database prepared for search (kept if it already is)."""
    database = database if isinstance(database, SearchDatabase) else SearchDatabase(database)
    return check_pair(query, database.codes)[0], database


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
    """Threads the search uses: :func:`set_search_threads`, else OMP_NUM_THREADS, else the usable cores."""
    if _threads:
        return _threads
    from_env = os.environ.get("OMP_NUM_THREADS", "")
    if from_env.isdigit() and int(from_env) > 0:
        return int(from_env)
    return usable_cpus()


def set_search_threads(threads: int | None) -> None:
    """Use ``threads`` search threads (None: back to the default of :func:`search_threads`)."""
    global _threads
    _threads = int(threads) if threads else None


def parallel_map(function: Callable, items: Iterable, threads: int) -> Iterator:
    """``map(function, items)`` on a pool of ``threads`` threads, results in order.

    Blocks go to whichever thread is free (the kernels release the GIL), so a
    thread slowed down by other processes does not hold up the others, as it
    would at an OpenMP barrier. At most 2 x threads results wait unconsumed.
    """
    items = iter(items)
    if threads <= 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(threads) as pool:
        pending = collections.deque(pool.submit(function, item) for item in itertools.islice(items, 2 * threads))
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(items, 1):
                pending.append(pool.submit(function, item))
            yield result


def query_blocks(n_queries: int, block: int = QUERY_BLOCK) -> list[slice]:
    return [slice(start, min(start + block, n_queries)) for start in range(0, n_queries, block)]


def map_query_blocks(function: Callable[[slice], object], n_queries: int,
                     block: int = QUERY_BLOCK) -> Iterator[tuple[slice, object]]:
    """``(rows, function(rows))`` for consecutive blocks of query rows, on :func:`search_threads` threads."""
    blocks = query_blocks(n_queries, block)
    yield from zip(blocks, parallel_map(function, blocks, min(search_threads(), len(blocks))))


def check_topk(k: int, database_size: int, what: str = "--topk") -> int:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"{what} must be a positive integer; got {k!r}")
    if k > database_size:
        raise ConfigError(
            f"{what} = {k} is larger than the database ({database_size} codes); "
            f"lower it to at most {database_size} (config `datasets.<name>.topk`) or use a larger database"
        )
    return int(k)


def no_labels(n: int) -> np.ndarray:
    """Zero-width label masks: nothing is relevant (plain search without labels)."""
    return np.zeros((n, 0), dtype=np.uint64)


def buckets(query_words: np.ndarray) -> int:
    """Histogram size of the kernels: every distance 0..(padded bits)."""
    return query_words.shape[1] * 64 + 1


class CountingSearch:
    """The counting kernel on one (query, database) pair, a block of queries per call.

    ``block(rows)`` returns ``(ids, distances, counts, relevant)``: the first
    ``depth`` items of each query's ranking, and the items and relevant items
    at each distance up to the depth-th item's (farther buckets 0).
    """

    def __init__(self, query, database, depth: int, query_masks=None, database_masks=None):
        query, database = search_pair(query, database)
        self.depth = check_topk(depth, len(database), "k")
        self.query_words, self.db_words = as_words(query), database.words
        self.query_masks = no_labels(len(query)) if query_masks is None else query_masks
        self.db_masks = no_labels(len(database)) if database_masks is None else database_masks

    def block(self, rows: slice):
        q_words, n, n_db = self.query_words[rows], rows.stop - rows.start, len(self.db_words)
        ids = np.empty((n, self.depth), dtype=np.int64)
        distances = np.empty((n, self.depth), dtype=np.int64)
        counts = np.empty((n, buckets(q_words)), dtype=np.int64)
        relevant = np.empty_like(counts)
        kernels.topk_block(q_words, self.db_words, self.query_masks[rows], self.db_masks, self.depth, ids,
                           distances, counts, relevant, np.empty(n_db, dtype=np.int64),
                           np.empty(n_db, dtype=np.int64))
        return ids, distances, counts, relevant


@SEARCH_ENGINES.register("counting")
def counting_topk(query, database, k: int) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """exact Hamming top-K: brcd's compiled counting kernels (radius guessed from a sample,
    branch-free scan, counting sort of the candidates)"""
    search = CountingSearch(query, database, k)
    for rows, (ids, distances, _, _) in map_query_blocks(search.block, len(search.query_words)):
        yield rows, ids, distances


@SEARCH_ENGINES.register("faiss")
def faiss_topk(query, database, k: int) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """exact Hamming top-K: faiss' counting top-K (hammings_knn_mc) on packed codes"""
    import faiss

    query, database = search_pair(query, database)
    k = check_topk(k, len(database), "k")
    q_words, db_words = pad_to_words(query), database.words.view(np.uint8)
    # faiss' counting state is (bits + 1) x k ids per query
    block = int(max(1, min(16, FAISS_STATE_BYTES // ((q_words.shape[1] * 8 + 1) * k * 8))))

    def search(rows: slice):
        faiss.omp_set_num_threads(1)  # this worker thread only: blocks run on our pool
        part = np.ascontiguousarray(q_words[rows])
        distances = np.empty((len(part), k), dtype=np.int32)
        ids = np.empty((len(part), k), dtype=np.int64)
        faiss.hammings_knn_mc(faiss.swig_ptr(part), faiss.swig_ptr(db_words), len(part), len(db_words), k,
                              part.shape[1], faiss.swig_ptr(distances), faiss.swig_ptr(ids))
        return ids, distances

    for rows, (ids, distances) in map_query_blocks(search, len(q_words), block):
        yield rows, ids, distances


def iter_topk(query, database, k: int, engine: str = DEFAULT_ENGINE) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """:func:`topk` in blocks: yields ``(rows, indices, distances)`` for consecutive query rows ``rows``."""
    return SEARCH_ENGINES.get(engine)(query, database, k)


def topk(query, database, k: int, engine: str = DEFAULT_ENGINE) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` database rows of every query's ranking (:data:`TIE_POLICY`).

    Returns ``(indices, distances)``: int64 row numbers into ``database`` (packed
    codes or a :class:`SearchDatabase`) and int32 Hamming distances, both Q x k,
    in ranking order.
    """
    query, database = search_pair(query, database)
    k = check_topk(k, len(database), "k")
    indices = np.empty((len(query), k), dtype=np.int64)
    distances = np.empty((len(query), k), dtype=np.int32)
    for rows, ids, dist in iter_topk(query, database, k, engine):
        indices[rows], distances[rows] = ids, dist
    return indices, distances


def hamming_distances(query, database) -> np.ndarray:
    """All distances, Q x N (small inputs: tests and examples; the search never builds this)."""
    query, database = check_pair(query, database)
    q_words, db_words = as_words(query), as_words(database)
    out = np.zeros((len(query), len(database)), dtype=distance_dtype(code_bits(query)))
    for w in range(q_words.shape[1]):
        out += np.bitwise_count(q_words[:, None, w] ^ db_words[None, :, w]).astype(out.dtype)
    return out


def paired_distances(a, b) -> np.ndarray:
    """Distance between row i of ``a`` and row i of ``b`` (same images, two encoders)."""
    a, b = check_pair(a, b)
    if len(a) != len(b):
        raise DataError(f"paired codes need the same number of rows; got {len(a)} and {len(b)}")
    return np.bitwise_count(as_words(a) ^ as_words(b)).sum(axis=1, dtype=np.int64)
