"""Exact Hamming retrieval and its metrics (SPEC §6); numpy + compiled (numba) kernels, no torch."""
from brcd.retrieval.hamming import SEARCH_ENGINES, TIE_POLICY, hamming_distances, search_threads, topk
from brcd.retrieval.metrics import (
    isd,
    map_at_k,
    nra_at_k,
    pack_labels,
    pr_by_radius,
    retrieval_metrics,
    retrieval_results,
    tie_aware_average_precision,
)

__all__ = [
    "SEARCH_ENGINES",
    "TIE_POLICY",
    "hamming_distances",
    "isd",
    "map_at_k",
    "nra_at_k",
    "pack_labels",
    "pr_by_radius",
    "retrieval_metrics",
    "retrieval_results",
    "search_threads",
    "tie_aware_average_precision",
    "topk",
]
