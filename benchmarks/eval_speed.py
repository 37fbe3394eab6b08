"""mAP@K speed: our chunked exact search against the classic per-query loop.

The loop is what classic hashing codebases run (e.g. CIBHash's
``calculate_top_map``): for every query, relevance by a label dot product,
Hamming distances as 0.5 * (L - B q) on ±1 float32 codes (exact for these
integers), a stable argsort, then AP over the top K. Ours is
:func:`brcd.retrieval.map_at_k` (compiled counting kernels,
:mod:`brcd.retrieval.kernels`). Both use the same tie policy (stable: ties
by database order), so their mAPs must agree to 1e-9, which this script
asserts.

Shapes: CIFAR-10 (5,000 queries x 50,000 database, 10 single-label classes,
K = 1,000) at 16 and 64 bits; NUS-WIDE (2,100 x 190,000, 21 multi-hot
concepts, K = 5,000) at 64 bits. Codes are random with class structure:
class prototypes with independent bit flips.

    .venv/bin/python benchmarks/eval_speed.py            # full loop (about a minute)
    .venv/bin/python benchmarks/eval_speed.py --quick    # loop on a query subsample, time extrapolated
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brcd.retrieval import TIE_POLICY, map_at_k, retrieval_metrics, search_threads  # noqa: E402


@dataclass(frozen=True)
class Shape:
    name: str
    queries: int
    database: int
    classes: int
    multi_label: bool
    topk: int
    bits: int


SHAPES = [
    Shape("cifar10", 5_000, 50_000, 10, False, 1_000, 16),
    Shape("cifar10", 5_000, 50_000, 10, False, 1_000, 64),
    Shape("nuswide", 2_100, 190_000, 21, True, 5_000, 64),
]


def make_data(shape: Shape, rng: np.random.Generator, flip: float):
    """Labels and packed codes: prototype of the (first) label with random bit flips."""
    n = shape.queries + shape.database
    if shape.multi_label:
        # skewed concept frequencies, 1 to 3 labels per image
        weights = 1.0 / np.arange(1, shape.classes + 1) ** 0.7
        weights /= weights.sum()
        primary = rng.choice(shape.classes, size=n, p=weights)
        labels = np.zeros((n, shape.classes), dtype=np.uint8)
        labels[np.arange(n), primary] = 1
        extra = rng.random((n, shape.classes)) < 0.06
        labels |= extra.astype(np.uint8)
    else:
        primary = rng.integers(0, shape.classes, size=n)
        labels = np.eye(shape.classes, dtype=np.uint8)[primary]
    prototypes = rng.integers(0, 2, size=(shape.classes, shape.bits), dtype=np.uint8)
    bits = prototypes[primary] ^ (rng.random((n, shape.bits)) < flip)
    packed = np.packbits(bits, axis=1)
    q, db = slice(0, shape.queries), slice(shape.queries, n)
    return packed[q], packed[db], labels[q], labels[db]


def loop_map(query_pm1, database_pm1, query_labels, database_labels, topk: int) -> tuple[np.ndarray, float]:
    """The classic per-query loop; returns per-query AP and seconds."""
    bits = query_pm1.shape[1]
    started = time.perf_counter()
    aps = np.zeros(len(query_pm1))
    for i in range(len(query_pm1)):
        relevant = (query_labels[i] @ database_labels.T > 0).astype(np.float32)
        hamming = 0.5 * (bits - query_pm1[i] @ database_pm1.T)
        order = np.argsort(hamming, kind="stable")
        top = relevant[order][:topk]
        found = int(top.sum())
        if found:
            aps[i] = np.mean(np.linspace(1, found, found) / (np.flatnonzero(top) + 1.0))
    return aps, time.perf_counter() - started


def as_pm1(packed: np.ndarray) -> np.ndarray:
    """±1 float32 codes, as classic codebases hold them (torch tensors moved to numpy)."""
    return np.unpackbits(packed, axis=1).astype(np.float32) * 2 - 1


def run_shape(shape: Shape, args, rng) -> dict:
    """Loop and ours interleaved in ``repeats`` rounds, so that both see the same machine load."""
    query, database, q_labels, db_labels = make_data(shape, rng, args.flip)
    loop_n = min(shape.queries, args.loop_queries) if args.quick else shape.queries
    subset = np.linspace(0, shape.queries - 1, loop_n).round().astype(int)
    rounds = np.array_split(subset, args.repeats)
    # the loop's inputs in the form it expects (not timed: codebases hold them like this)
    q_pm1, db_pm1 = as_pm1(query), as_pm1(database)
    q_float, db_float = q_labels.astype(np.float32), db_labels.astype(np.float32)

    map_at_k(query[:64], database, q_labels[:64], db_labels, shape.topk)  # warm-up
    loop_aps, loop_rates, ours_seconds = [], [], []
    for part in rounds:
        aps, seconds = loop_map(q_pm1[part], db_pm1, q_float[part], db_float, shape.topk)
        loop_aps.append(aps)
        loop_rates.append(seconds / len(part))
        started = time.perf_counter()
        ours = map_at_k(query, database, q_labels, db_labels, shape.topk)
        ours_seconds.append(time.perf_counter() - started)
    del db_pm1
    loop_map_value = float(np.concatenate(loop_aps).mean())
    loop_total = float(np.median(loop_rates)) * shape.queries
    ours_median = float(np.median(ours_seconds))

    # equality under the same tie policy, on the loop's queries
    ours_subset = map_at_k(query[subset], database, q_labels[subset], db_labels, shape.topk)
    if abs(ours_subset - loop_map_value) > 1e-9:
        raise AssertionError(f"{shape}: mAP differs: loop {loop_map_value!r}, ours {ours_subset!r}")

    tracemalloc.start()
    map_at_k(query, database, q_labels, db_labels, shape.topk)
    _, peak_map = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    started = time.perf_counter()
    metrics = retrieval_metrics(query, database, q_labels, db_labels, shape.topk)
    all_seconds = time.perf_counter() - started
    _, peak_all = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "shape": f"{shape.name} {shape.queries}x{shape.database}",
        "bits": shape.bits,
        "K": shape.topk,
        "mAP loop": loop_map_value,
        "mAP ours (same queries)": ours_subset,
        "mAP ours (all)": ours,
        "mAP tie-aware": metrics[f"map@{shape.topk}_tie_aware"],
        "loop s": loop_total,
        "loop timed on": f"{loop_n}/{shape.queries}" + (" (extrapolated)" if loop_n < shape.queries else ""),
        "ours s": ours_median,
        "speed-up": loop_total / ours_median,
        "ours peak MiB": peak_map / 2**20,
        "all metrics s": all_seconds,
        "all metrics peak MiB": peak_all / 2**20,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="time the loop on a query subsample and extrapolate its total (stated in the table)")
    parser.add_argument("--loop-queries", type=int, default=250, help="loop queries in --quick mode (default 250)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds; each times a share of the loop's queries, then ours on all queries (default 3)")
    parser.add_argument("--threads", type=int, help="search threads of ours (default: all cores)")
    parser.add_argument("--flip", type=float, default=0.2, help="bit-flip probability around class prototypes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=sorted({s.name for s in SHAPES}), help="run one dataset's shapes only")
    args = parser.parse_args(argv)
    from tabulate import tabulate

    from brcd.retrieval.hamming import set_search_threads

    if args.threads:
        set_search_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    print(f"tie policy: {TIE_POLICY}; search threads: {search_threads()}; cores: {os.cpu_count()}; "
          f"numpy {np.__version__}; load average {os.getloadavg()[0]:.2f}")
    print(f"Timing: {args.repeats} interleaved rounds (a share of the loop's queries, then ours on all queries); "
          "loop s = median per-query time x queries, ours s = median run"
          + ("; --quick: the loop runs on a query subsample and its total is extrapolated" if args.quick else ""))
    rows = []
    for shape in SHAPES:
        if args.only and shape.name != args.only:
            continue
        row = run_shape(shape, args, rng)
        rows.append(row)
        print(f"  {row['shape']} {row['bits']} bits: loop {row['loop s']:.1f} s, ours {row['ours s']:.2f} s "
              f"({row['speed-up']:.0f}x), mAP {row['mAP ours (all)']:.4f}", flush=True)
    print()
    print(tabulate(rows, headers="keys", floatfmt=".4g"))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} (other processes slow both sides)")
    print(f"mAPs of loop and ours agree to 1e-9 on the same queries (asserted). "
          f"Peak MiB: numpy allocations traced by tracemalloc; process peak RSS (all shapes, inputs and the "
          f"loop's float codes included): {rss:.0f} MiB.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
