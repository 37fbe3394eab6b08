"""Device, threads and seeding: the few process-wide settings every stage shares."""
from __future__ import annotations

import logging
import os
import platform
import random

import numpy as np

log = logging.getLogger(__name__)


def cpu_model() -> str | None:
    """The host's CPU model ("AMD EPYC 7B13"), from /proc/cpuinfo on Linux, else the platform's word."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine() or None


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve_device(name: str | None = "auto"):
    """``auto`` -> CUDA when available, else CPU; anything else is passed to torch."""
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_threads(threads: int | None) -> int:
    """Use ``threads`` CPU threads for torch (default: Snakemake's job threads or all cores)."""
    import torch

    if not threads:
        threads = int(os.environ.get("SNAKEMAKE_THREADS", 0)) or os.cpu_count() or 1
    torch.set_num_threads(int(threads))
    return int(threads)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def add_runtime_arguments(parser) -> None:
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: config `threads` or all cores)")
    parser.add_argument("--device", default=None, help="torch device (default: config `device`, auto = CUDA if available)")


def load_stage(args) -> tuple[dict, object]:
    """What every stage command starts with: the config of ``--config`` and the
    torch device, with --threads/--device (or the config's values) applied."""
    from brcd.config import load_config

    config = load_config(args.config)
    return config, setup_runtime(args, config)


def setup_runtime(args, config: dict):
    """Apply --threads/--device (or the config's values); return the torch device."""
    threads = set_threads(args.threads or config.get("threads"))
    device = resolve_device(args.device or config.get("device", "auto"))
    log.info("device %s, %d CPU threads", device, threads)
    return device
