"""How fast the models are: the encoder and search timing tables (``results/timing/``).

The encoder table compares every backbone of the grid with each teacher (batch-1 latency
and throughput); the search table is the exact Hamming top-K search per code length.
"""
from __future__ import annotations

from typing import Mapping

from brcd.report.format import MISSING, format_number, markdown_table
from brcd.report.grid import GridResults


def encoder_section(results: GridResults, dataset: str) -> list[str]:
    return [f"### Encoder timing ({dataset} images)", "",
            encoder_table(results, dataset), "",
            "Decoded image to packed code (preprocessing, frozen backbone, hash head, sign, bit packing), "
            "median after warm-up. Speed-up: the teacher's batch-1 latency over this backbone's, and this "
            "backbone's throughput over the teacher's.", ""]


def search_section(results: GridResults) -> list[str]:
    return ["## Search latency", "",
            "Exact Hamming top-K search on packed random codes: one query per call (median), and all queries "
            f"in one call (median time per query). Method: {search_method(results)}.", "",
            search_table(results), ""]


def _backbones(results: GridResults, dataset: str) -> list[str]:
    """The grid's backbones, teachers first: those of the dataset's encoder timing files, in their order."""
    return [backbone for timed, backbone in results.encoder if timed == dataset]


def _role(config: Mapping, alias: str) -> str:
    return ", ".join(role for role, key in (("teacher", "teachers"), ("student", "students")) if alias in config[key])


def encoder_table(results: GridResults, dataset: str) -> str:
    config = results.config
    teachers = config["teachers"]
    headers = ["backbone", "role", "model", "device", "input", "threads", "latency, batch 1 (ms/image)",
               "throughput (images/s)", *(f"speed-up vs `{t}` (latency / throughput)" for t in teachers)]
    rows = []
    for alias in _backbones(results, dataset):
        timing = results.encoder[(dataset, alias)]
        speedups = [_speedup(results.encoder[(dataset, t)], timing) for t in teachers]
        rows.append([f"`{alias}`", _role(config, alias), f"`{timing.get('model', MISSING)}`", _device(timing),
                     f"{timing.get('input_size', MISSING)} px", str(timing.get("threads", MISSING)),
                     format_number(timing.get("latency_ms")), _throughput(timing), *speedups])
    return markdown_table(headers, rows, numeric_from=4)


def _device(timing: Mapping) -> str:
    device, name = str(timing.get("device", MISSING)), timing.get("device_name")
    return f"{device}: {name}" if name and name != device else device


def _throughput(timing: Mapping) -> str:
    rate = timing.get("throughput_images_per_second")
    batches = [b for b in timing.get("batches", []) if b.get("images_per_second") == rate]
    at = f" (batch {batches[0]['batch_size']})" if batches else ""
    return format_number(rate) + at


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if not numerator or not denominator:
        return MISSING
    return f"{numerator / denominator:.2f}×"


def _speedup(teacher: Mapping, other: Mapping) -> str:
    latency = _ratio(teacher.get("latency_ms"), other.get("latency_ms"))
    throughput = _ratio(other.get("throughput_images_per_second"), teacher.get("throughput_images_per_second"))
    return f"{latency} / {throughput}"


def search_method(results: GridResults) -> str:
    """The search method the timing files record (one per bit length; normally all the same)."""
    methods = sorted({str(results.search[bits].get("method", MISSING)) for bits in results.config["bits"]})
    return "; ".join(methods)


def search_table(results: GridResults) -> str:
    bits_list = results.config["bits"]
    entries = {(bits, e["database_size"], e["topk"]): e for bits in bits_list for e in results.search[bits]["results"]}
    sizes_and_k = sorted({(size, k) for _, size, k in entries})
    headers = ["database size", "K"]
    for bits in bits_list:
        headers += [f"{bits} bits: single query (ms)", f"{bits} bits: batched (ms/query)"]
    rows = []
    for size, k in sizes_and_k:
        row = [f"{size:,}", str(k)]
        for bits in bits_list:
            entry = entries.get((bits, size, k))
            row += [format_number(entry["single"]["per_query_ms_median"]) if entry else MISSING,
                    format_number(entry["batch"]["per_query_ms_median"]) if entry else MISSING]
        rows.append(row)
    return markdown_table(headers, rows, numeric_from=0)
