"""Distillation losses by name (config key ``kd``): BRCD, its ablations and baselines.

Usage (the student trainer)::

    loss_fn = create_distill_loss(name, bits, num_train, config["brcd"], clusters)
    out = loss_fn(KDBatch(index, s_logits, s_codes, t_logits, t_codes))
    total = l_hash + lam * out["loss"]

``num_train`` = ``len(Splits.indices["train"])``; ``KDBatch.index`` holds
positions into that (sorted) array. ``clusters`` comes from
:func:`brcd.cluster.load_clusters` and is required when
``loss_fn.needs_clusters``; its rows must be that same training split (check
with ``clusters.assignment_for(splits.indices["train"])``).
"""
from __future__ import annotations

from typing import Any, Mapping

from brcd.distill.base import KD_LOSSES, DistillLoss, KDBatch
from brcd.errors import ConfigError

# Importing the modules registers the methods.
from brcd.distill import none, kd, rkd, pkt, sp, crd, crcd, sskd, packd, brcd  # noqa: E402,F401

__all__ = ["KD_LOSSES", "KDBatch", "DistillLoss", "check_kd_settings", "create_distill_loss"]


def check_kd_settings(config: Mapping[str, Any], source: str = "config") -> None:
    """Config check: every `kd_settings` entry names a registered method, and every setting is one
    that method declares (its class's ``settings``), of its type and in its range; errors name the key,
    the value and the allowed form. The typed values are written back (``"100"`` from ``--config``
    becomes 100), so the jobs read what the check saw."""
    settings = config.get("kd_settings") or {}
    for name in settings:
        if name not in KD_LOSSES:
            raise ConfigError(f"{source}: `kd_settings.{name}`: no distillation method {name!r}; "
                              f"allowed: {', '.join(KD_LOSSES.names())}")
        try:
            settings[name] = {**settings[name], **KD_LOSSES.get(name).settings.parse(settings[name],
                                                                                      f"kd_settings.{name}")}
            KD_LOSSES.get(name).resolve_options(name, {**config.get("brcd", {}), **settings}, f"kd_settings.{name}")
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def create_distill_loss(name: str, bits: int, num_train: int, settings: Mapping[str, Any] | None = None,
                        clusters=None) -> DistillLoss:
    """Build the distillation loss registered as ``name``.

    ``settings``: the config's ``brcd`` section (BRCD variants read ``alpha``
    and ``tau``); ``settings[name]`` may hold per-method overrides of the
    defaults its class declares (``settings``).
    """
    cls = KD_LOSSES.get(name)
    options = cls.resolve_options(name, dict(settings or {}))
    if num_train < 2:
        raise ConfigError(f"distillation needs at least 2 training images, got {num_train}; enlarge the train split")
    if cls.needs_clusters and clusters is None:
        raise ConfigError(
            f"{name!r}: BRCD needs the teacher's clusters: run the cluster rule / pass --clusters "
            "(clusters.parquet from `brcd cluster`)"
        )
    return cls(name=name, bits=bits, num_train=num_train, options=options,
               clusters=clusters if cls.needs_clusters else None)
