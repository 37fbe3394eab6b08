"""``brcd time-search`` and ``brcd time-encoder``: the timing rows of SPEC §6.

``time-search`` measures the exact Hamming top-K search of
:mod:`brcd.retrieval.hamming` on random codes, per database size and K,
with the engine evaluation uses (``--engine faiss`` times faiss' instead).
The database is prepared once, outside the timed calls, as codes are added
to an index once (:class:`brcd.retrieval.hamming.SearchDatabase`):

- ``batch``: all queries in one call, seconds per query (median and best of
  ``repeats`` calls) -- the offline-evaluation regime;
- ``single``: one query per call (median / 90th percentile / mean over the
  queries) -- the online-serving regime.

``time-encoder`` measures one encoder from a decoded uint8 image (real images
of the dataset) to its packed code: clean-view preprocessing, frozen
backbone, hash head, sign, ``np.packbits``. Batch 1 gives the per-image
latency, larger batches the throughput (config ``timing.batch_sizes``,
default [1, 64]). Timing does not depend on the head's weights, so without
``--checkpoint`` a freshly initialised head is timed.

Both run ``warmup`` untimed iterations first and record thread counts,
device and library versions. Settings: config section ``timing``
(``batch_sizes``, ``repeats``, ``warmup``, ``database_sizes``, ``queries``,
``topk``), overridden by command-line options.

Both subcommands live in this module; :func:`configure_parser` and
:func:`run` dispatch on the subcommand name.
"""
from __future__ import annotations

import functools
import logging
import os
import platform
import time
from typing import Callable, Mapping

import numpy as np

from brcd.argtypes import non_negative_int, positive_int
from brcd.errors import ConfigError

log = logging.getLogger(__name__)

SEARCH_DEFAULTS = {"database_sizes": [10_000, 100_000, 1_000_000], "topk": [100, 1000], "queries": 100,
                   "repeats": 3, "warmup": 2}
ENCODER_DEFAULTS = {"batch_sizes": [1, 64], "repeats": 5, "warmup": 2}
#: most single-query calls timed per (database size, K)
SINGLE_QUERY_CALLS = 100


def settings(args, config: Mapping | None, defaults: Mapping) -> dict:
    """Command line over config ``timing`` over built-in defaults."""
    timing = dict((config or {}).get("timing") or {})
    out = {}
    for key, default in defaults.items():
        value = getattr(args, key, None)
        out[key] = value if value is not None else timing.get(key, default)
    return out


@functools.cache  # fixed for the process (ATEN_CPU_CAPABILITY is read at start-up); timing files ask twice
def cpu_name() -> str:
    """The CPU's model name and the kernel set PyTorch dispatches to on it, e.g. "AMD EPYC
    (x86_64, AVX2 kernels)": timings and last-bit results differ between these, and
    ATEN_CPU_CAPABILITY can select another kernel set on the same CPU."""
    import torch

    from brcd.runtime import cpu_model

    model = cpu_model()

    capability = torch.backends.cpu.get_cpu_capability()
    return f"{model} ({platform.machine()}, {capability} kernels)"


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu": cpu_name(), "cpu_count": os.cpu_count(), "python": platform.python_version()}


def _percentile_ms(times: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(times) * 1e3, q))


# --------------------------------------------------------------------------- search


def _time_single_queries(topk, query, database, k: int) -> list[float]:
    """One query per call (one block: a single thread)."""
    times = []
    for row in range(min(len(query), SINGLE_QUERY_CALLS)):
        started = time.perf_counter()
        topk(query[row : row + 1], database, k)
        times.append(time.perf_counter() - started)
    return times


def time_search(bits: int, database_sizes, topks, queries: int, repeats: int, warmup: int, seed: int = 0,
                engine: str | None = None) -> dict:
    """Latency of :func:`brcd.retrieval.topk` with ``engine`` (default: evaluation's) on uniform random codes."""
    import functools

    import faiss
    import numba

    from brcd.codes import check_bits
    from brcd.retrieval import SEARCH_ENGINES, TIE_POLICY, search_threads, topk
    from brcd.retrieval.hamming import DEFAULT_ENGINE, SearchDatabase

    bits = check_bits(bits, "--bits")
    engine = engine or DEFAULT_ENGINE
    method = " ".join(SEARCH_ENGINES.get(engine).__doc__.split())  # unknown names fail here, before any work
    search = functools.partial(topk, engine=engine)
    rng = np.random.default_rng(seed)
    query = rng.integers(0, 256, size=(queries, bits // 8), dtype=np.uint8)
    results = []
    for size in database_sizes:
        # prepared once, like codes added to an index: the timed calls are searches only
        database = SearchDatabase(rng.integers(0, 256, size=(int(size), bits // 8), dtype=np.uint8))
        for k in topks:
            if k > size:
                log.warning("skipping K = %d: larger than the database of %d codes", k, size)
                continue
            for _ in range(warmup):
                search(query[: min(queries, 32)], database, k)
            batch = []
            for _ in range(repeats):
                started = time.perf_counter()
                search(query, database, k)
                batch.append((time.perf_counter() - started) / queries)
            single = _time_single_queries(search, query, database, k)
            entry = {
                "database_size": int(size), "topk": int(k), "queries": int(queries),
                "batch": {"per_query_ms_median": _percentile_ms(batch, 50), "per_query_ms_min": min(batch) * 1e3,
                          "repeats": int(repeats)},
                "single": {"per_query_ms_median": _percentile_ms(single, 50),
                           "per_query_ms_p90": _percentile_ms(single, 90),
                           "per_query_ms_mean": float(np.mean(single) * 1e3), "calls": len(single), "threads": 1},
            }
            log.info("N = %d, K = %d: %.4f ms/query batched, %.4f ms single", size, k,
                     entry["batch"]["per_query_ms_median"], entry["single"]["per_query_ms_median"])
            results.append(entry)
    return {
        "kind": "search",
        "bits": bits,
        "engine": engine,
        "method": method,
        "tie_policy": TIE_POLICY,
        "codes": "uniform random bits",
        "database": "prepared once outside the timed calls (padded to 64-bit words)",
        "threads": search_threads(),
        "warmup": int(warmup),
        "repeats": int(repeats),
        "seed": int(seed),
        "versions": {"numpy": np.__version__, "numba": numba.__version__, "faiss": faiss.__version__},
        "machine": machine(),
        "results": results,
    }


def configure_search(parser) -> None:
    parser.add_argument("--bits", required=True, type=positive_int, help="code length L (multiple of 8)")
    parser.add_argument("--config", help="grid config: its `timing` section gives the defaults")
    parser.add_argument("--database-sizes", nargs="+", type=positive_int, metavar="N",
                        help=f"database sizes (default {SEARCH_DEFAULTS['database_sizes']})")
    parser.add_argument("--topk", nargs="+", type=positive_int, metavar="K",
                        help=f"K values (default {SEARCH_DEFAULTS['topk']})")
    parser.add_argument("--queries", type=positive_int,
                        help=f"queries per measurement (default {SEARCH_DEFAULTS['queries']})")
    parser.add_argument("--repeats", type=positive_int, help="timed batch calls (default 3)")
    parser.add_argument("--warmup", type=non_negative_int, help="untimed calls first (default 2)")
    parser.add_argument("--threads", type=positive_int,
                        help="search threads (default: config `threads`, else OMP_NUM_THREADS, else all cores)")
    from brcd.retrieval.hamming import DEFAULT_ENGINE, SEARCH_ENGINES

    parser.add_argument("--engine", default=DEFAULT_ENGINE, choices=SEARCH_ENGINES.names(),
                        help="exact search engine to time (default: counting, the one evaluation uses)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random codes")
    parser.add_argument("--out", required=True, help="results/timing/search/{bits}.json")


def _timing_config(path) -> dict:
    """The config, schema-checked only: time-search reads just `timing` and `threads`, and
    the full check (which builds registries of models) would cost seconds of imports."""
    from pathlib import Path

    import yaml

    from brcd.config import validate_schema

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass one of config/*.yaml")
    return validate_schema(yaml.safe_load(path.read_text()) or {}, str(path))


def run_search(args) -> None:
    from brcd.io import write_json
    from brcd.retrieval.hamming import set_search_threads

    config = _timing_config(args.config) if args.config else None
    options = settings(args, config, SEARCH_DEFAULTS)
    set_search_threads(args.threads or (config or {}).get("threads"))
    result = time_search(args.bits, options["database_sizes"], options["topk"], options["queries"],
                         options["repeats"], options["warmup"], args.seed, args.engine)
    write_json(args.out, result)
    log.info("-> %s", args.out)


# --------------------------------------------------------------------------- encoder


class Encoder:
    """Decoded uint8 images -> packed codes, the whole online path of one model."""

    def __init__(self, backbone, head, device):
        self.backbone, self.head, self.device = backbone, head, device

    def __call__(self, images) -> np.ndarray:
        import torch

        from brcd.augment import clean_batch
        from brcd.codes import pack_codes
        from brcd.hashing import codes_from_logits

        with torch.inference_mode():
            x = clean_batch(images, self.backbone.input_size, self.backbone.mean, self.backbone.std)
            u = self.head(self.backbone(x.to(self.device)))
            codes = codes_from_logits(u).cpu().numpy()
        return pack_codes(codes)


def _load_head(path: str, criterion: str | None, bits: int, feature_dim: int):
    from brcd.checkpoint import load_checkpoint, load_head

    bundle = load_checkpoint(path)
    spec = bundle["head"]
    if int(spec["bits"]) != bits or int(spec["in_dim"]) != feature_dim:
        raise ConfigError(
            f"checkpoint {path} holds a head for {spec['in_dim']}-d features and {spec['bits']} bits, but the "
            f"backbone gives {feature_dim}-d features and --bits is {bits}; pass the matching --backbone/--bits"
        )
    names = list(bundle["heads"])
    chosen = criterion or names[0]
    if chosen not in names:
        raise ConfigError(f"checkpoint {path} has heads {', '.join(names)}; --head {chosen!r} is not one of them")
    return load_head(bundle, chosen), chosen


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_calls(encode: Callable, batches: list, device) -> list[float]:
    times = []
    for images in batches:
        _synchronize(device)
        started = time.perf_counter()
        encode(images)
        _synchronize(device)
        times.append(time.perf_counter() - started)
    return times


def time_encoder(config: Mapping, dataset: str, alias: str, bits: int, device, batch_sizes, repeats: int,
                 warmup: int, checkpoint: str | None = None, head_name: str | None = None) -> dict:
    import torch

    from brcd.codes import check_bits
    from brcd.config import backbone_options, dataset_options
    from brcd.data import create_dataset
    from brcd.models import create_backbone, create_head

    bits = check_bits(bits, "--bits")
    options = backbone_options(config, alias, dataset)
    data = create_dataset(dataset, dataset_options(config, dataset))
    needed = max(max(batch_sizes), repeats + warmup)
    if len(data) == 0:
        raise ConfigError(f"dataset {dataset!r} has no images to time the encoder on")
    images = data.images(np.arange(needed) % len(data))  # decoded once: decoding is not timed

    backbone = create_backbone(options, alias).to(device)
    if checkpoint:
        head, head_name = _load_head(checkpoint, head_name, bits, backbone.feature_dim)
    else:
        head = create_head(options.get("head", "mlp"), backbone.feature_dim, bits,
                           hidden=int(options.get("hidden", 1000)))
    encode = Encoder(backbone, head.to(device).eval(), device)
    packed = encode(images[:1])
    if packed.shape != (1, bits // 8):
        raise AssertionError(f"encoder produced codes of shape {packed.shape}")

    rows = []
    for batch_size in batch_sizes:
        # Batch 1 cycles through different images; larger batches reuse the first ones.
        calls = [images[(i % len(images)) : (i % len(images)) + 1] if batch_size == 1 else images[:batch_size]
                 for i in range(warmup + repeats)]
        _time_calls(encode, calls[:warmup], device)
        times = _time_calls(encode, calls[warmup:], device)
        median = float(np.median(times))
        rows.append({
            "batch_size": int(batch_size), "repeats": int(repeats),
            "seconds_median": median, "seconds_min": float(min(times)),
            "per_image_ms": median / batch_size * 1e3,
            "images_per_second": batch_size / median,
        })
        log.info("%s, batch %d: %.3f ms/image, %.1f images/s", alias, batch_size, rows[-1]["per_image_ms"],
                 rows[-1]["images_per_second"])
    by_size = {row["batch_size"]: row for row in rows}
    return {
        "kind": "encoder",
        "dataset": dataset,
        "backbone": alias,
        "model": options["model"],
        "input_size": backbone.input_size,
        "head": options.get("head", "mlp"),
        "head_input": options.get("head_input", "pooled"),
        "feature_dim": backbone.feature_dim,
        "bits": bits,
        "checkpoint": checkpoint,
        "checkpoint_head": head_name if checkpoint else None,
        "pipeline": "decoded uint8 image -> clean view (resize, normalise) -> backbone -> head -> sign -> np.packbits",
        "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else cpu_name()),
        "threads": torch.get_num_threads(),
        "warmup": int(warmup),
        "repeats": int(repeats),
        "latency_ms": by_size[1]["per_image_ms"] if 1 in by_size else None,
        "throughput_images_per_second": max(row["images_per_second"] for row in rows),
        "batches": rows,
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
        "machine": machine(),
    }


def configure_encoder(parser) -> None:
    from brcd.runtime import add_runtime_arguments

    parser.add_argument("--config", required=True, help="grid config YAML")
    parser.add_argument("--dataset", required=True, help="dataset whose images are encoded")
    parser.add_argument("--backbone", required=True, help="backbone alias (a key of `backbones`)")
    parser.add_argument("--bits", required=True, type=positive_int, help="code length L")
    parser.add_argument("--checkpoint",
                        help="model.pt of a trained head (default: a fresh head; timing ignores weights)")
    parser.add_argument("--head", help="which head of the checkpoint (teacher, sym, asym; default: the first)")
    parser.add_argument("--batch-sizes", nargs="+", type=positive_int, metavar="B", help="default: config or [1, 64]")
    parser.add_argument("--repeats", type=positive_int, help="timed calls per batch size (default 5)")
    parser.add_argument("--warmup", type=non_negative_int, help="untimed calls first (default 2)")
    parser.add_argument("--out", required=True, help="results/timing/encoder/{dataset}/{backbone}.json")
    add_runtime_arguments(parser)


def run_encoder(args) -> None:
    from brcd.io import write_json
    from brcd.runtime import load_stage

    config, device = load_stage(args)
    options = settings(args, config, ENCODER_DEFAULTS)
    result = time_encoder(config, args.dataset, args.backbone, args.bits, device, options["batch_sizes"],
                          options["repeats"], options["warmup"], args.checkpoint, args.head)
    write_json(args.out, result)
    log.info("-> %s", args.out)


# --------------------------------------------------------------------------- CLI dispatch

#: subcommand -> (configure_parser, run)
SUBCOMMANDS: dict[str, tuple[Callable, Callable]] = {
    "time-search": (configure_search, run_search),
    "time-encoder": (configure_encoder, run_encoder),
}


def _subcommand(name: str) -> tuple[Callable, Callable]:
    try:
        return SUBCOMMANDS[name]
    except KeyError:
        raise ConfigError(f"brcd.timing implements {', '.join(SUBCOMMANDS)}, not {name!r}") from None


def configure_parser(parser) -> None:
    # The CLI gives each subcommand its own parser named "brcd <subcommand>".
    name = parser.prog.split()[-1]
    _subcommand(name)[0](parser)
    parser.set_defaults(timing_command=name)


def run(args) -> None:
    _subcommand(getattr(args, "timing_command", None) or args.command)[1](args)
