"""The registry-wide config check: every name a grid config uses resolves, before any job.

:mod:`brcd.config` loads and schema-validates a config; this module, above the
registries (datasets, backbones, hashing objectives, distillation losses,
paradigms), checks every axis value against the registry that will have to
resolve it and runs each component's own entry checks, so that a bad config
fails at parse time, naming the key and the allowed values. The registries
are imported lazily: ``brcd check-config`` and the Snakefile pay for a model
library only when they check a config.
"""
from __future__ import annotations

import os
from typing import Callable, Mapping

from brcd.config import load_config
from brcd.errors import ConfigError


def load_checked_config(path: str | os.PathLike) -> dict:
    """:func:`brcd.config.load_config`, then :func:`check_config`."""
    config = load_config(path)
    check_config(config, str(path))
    return config


def _dataset_names() -> list[str]:
    from brcd.data import DATASETS

    return DATASETS.names()


def _kd_names() -> list[str]:
    from brcd.distill import KD_LOSSES

    return KD_LOSSES.names()


def _student_paradigms() -> list[str]:
    """Paradigms a grid may list: those that evaluate students (``teacher`` is implied)."""
    from brcd.retrieval.paradigms import PARADIGMS

    return [name for name in PARADIGMS.names() if PARADIGMS.get(name).needs_student]


def _hash_names() -> list[str]:
    from brcd.hashing import OBJECTIVES

    return OBJECTIVES.names()


def _check_datasets(config: Mapping, source: str) -> None:
    from brcd.data.checks import check_dataset_entries

    check_dataset_entries(config, source)


def _check_cluster_counts(config: Mapping, source: str) -> None:
    from brcd.data.checks import known_train_size
    from brcd.distill.brcd import check_cluster_count

    for name, options in config.get("datasets", {}).items():
        num_train = known_train_size(name, options, int(config.get("split_seed", 0)))
        if num_train is not None:
            check_cluster_count(config, name, num_train, source)


def _check_kd_settings(config: Mapping, source: str) -> None:
    from brcd.distill import check_kd_settings

    check_kd_settings(config, source)


def _check_lambda(config: Mapping, source: str) -> None:
    from brcd.lambdas import check_lambda

    check_lambda(config, source)


def _check_backbones(config: Mapping, source: str) -> None:
    from brcd.models import check_backbone_entries

    check_backbone_entries(config, source)


def _check_matmul(config: Mapping, source: str) -> None:
    from brcd.models.linear import LINEAR_KERNELS

    for role, settings in config.get("train", {}).items():
        kernel = settings.get("matmul")
        if kernel is not None and kernel not in LINEAR_KERNELS:
            raise ConfigError(f"{source}: unknown matmul kernel {kernel!r} in `train.{role}.matmul`; allowed "
                              f"values: {', '.join(LINEAR_KERNELS.names())}")


#: axis key -> function giving the allowed names (imported lazily).
AXIS_REGISTRIES: dict[str, Callable[[], list[str]]] = {
    "datasets": _dataset_names,
    "hash": _hash_names,
    "kd": _kd_names,
    "paradigms": _student_paradigms,
}


def _axis_values(config: Mapping, key: str) -> list[str]:
    value = config.get(key, [])
    return list(value.keys()) if isinstance(value, Mapping) else list(value)


def check_config(config: Mapping, source: str = "config") -> None:
    """Check every axis value against its registry and alias table."""
    for key, allowed_names in AXIS_REGISTRIES.items():
        allowed = allowed_names()
        for value in _axis_values(config, key):
            if value not in allowed:
                raise ConfigError(f"{source}: unknown value {value!r} in `{key}`; allowed values: {', '.join(allowed)}")
    aliases = list(config.get("backbones", {}))
    for key in ("teachers", "students"):
        for alias in config.get(key, []):
            if alias not in aliases:
                raise ConfigError(
                    f"{source}: `{key}` names backbone alias {alias!r}, which `backbones` does not define; "
                    f"defined aliases: {', '.join(aliases)}"
                )
    for bits in config.get("bits", []):
        if bits % 8:
            raise ConfigError(f"{source}: `bits` value {bits} is not a multiple of 8")
    for hook in CONFIG_CHECKS:
        hook(config, source)


#: whole-config checks beyond the axes: dataset entries (keys, sizes), backbone model names and weights,
#: per-method distillation settings, BRCD's number of clusters against the training split, the λ grids,
#: the heads' matmul kernels.
CONFIG_CHECKS: list[Callable[[Mapping, str], None]] = [_check_datasets, _check_backbones, _check_kd_settings,
                                                       _check_cluster_counts, _check_lambda, _check_matmul]
