"""Grid configs: loading, JSON-schema validation with defaults, and the trainer's settings.

The schema (``workflow/schemas/config.schema.yaml``) checks shapes and types
and fills in defaults; :class:`TrainSettings` are the trainer's settings per
role, which cell hashes include. Checking every axis value against the
registry that resolves it is :mod:`brcd.checks`, which sits above the
registries.
"""
from __future__ import annotations

import numbers
import os
from pathlib import Path
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import yaml

from brcd.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def validate_schema(config: dict, source: str = "config") -> dict:
    """Validate ``config`` in place against the schema, after applying the numeric rule
    (:mod:`brcd.options`: ``16.0`` and ``"16"`` are read as ``16`` where an integer is wanted), and
    fill in defaults. A failure names the key, the value and the allowed form."""
    from brcd.schema import apply_numeric_rule, error_message, validator_class

    if isinstance(config.get("brcd"), Mapping) and "lambda" in config["brcd"]:
        raise ConfigError(f"{source}: key `brcd.lambda` moved to the top-level `lambda` (a number, a list of "
                          "candidates, or a mapping with `default` and per-method entries), which every "
                          "distillation method reads; move it there")
    schema = _schema()
    apply_numeric_rule(config, schema)
    error = next(validator_class()(schema).iter_errors(config), None)
    if error is not None:
        raise ConfigError(f"{source}: {error_message(error, schema)}")
    return config


def _read_yaml(path: Path):
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path} is not UTF-8 text: byte {data[exc.start]:#04x} on line {line} (offset "
                          f"{exc.start}) is not UTF-8; save the file as UTF-8 (or remove that character)") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None


def load_config(path: str | os.PathLike) -> dict:
    """Read and schema-validate (filling defaults) a grid config.

    The registry-wide check (every name the config uses resolves) is
    :func:`brcd.checks.load_checked_config`, a layer up: stage commands only
    load, since Snakemake already checked the grid, each stage resolves the
    names it uses through the registries anyway (with the same clear errors),
    and the full check would pull model libraries into jobs that never build a
    model.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass one of config/*.yaml")
    config = _read_yaml(path)
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys")
    return validate_schema(config, str(path))


#: The trainer's settings per role (brcd.train): reference values (SPEC §2) scaled to CPU-sized runs;
#: override per config under `train`. Here, not in the trainer, because a cell's config hash needs them.
TRAIN_DEFAULTS = {
    "teacher": {"lr": 5e-4, "epochs": 100, "min_epochs": 20, "batch_size": 64, "eval_every": 5, "patience": 4,
                "weight_decay": 0.0, "min_delta": 0.0},
    "student": {"lr": 1e-3, "epochs": 100, "min_epochs": 20, "batch_size": 64, "eval_every": 5, "patience": 4,
                "weight_decay": 0.0, "min_delta": 0.0},
}


#: ``train.<role>.matmul`` when not given; equal to :data:`brcd.models.linear.DEFAULT_KERNEL`
DEFAULT_MATMUL = "blas"


@dataclass(frozen=True)
class TrainSettings:
    lr: float
    epochs: int
    min_epochs: int
    batch_size: int
    eval_every: int
    patience: int
    weight_decay: float
    #: a validation counts as an improvement for early stopping only when it beats the best so far by
    #: more than this (the best checkpoint still follows every gain): runs creeping up by noise-sized
    #: steps stop instead of running into the cap
    min_delta: float = 0.0
    #: the kernel of the head's matrix products (:data:`brcd.models.linear.LINEAR_KERNELS`): ``blas``
    #: (torch's default) or ``onednn`` (fp32 as well, up to twice as fast on AMD CPUs; other bytes)
    matmul: str = DEFAULT_MATMUL

    @classmethod
    def from_config(cls, config: Mapping, role: str) -> "TrainSettings":
        values = {**TRAIN_DEFAULTS[role], **config.get("train", {}).get(role, {})}
        return cls(**values)

    def hashed_fields(self) -> dict:
        """The settings a run's results depend on, for its cell's config hash: all of them, except
        ``matmul`` at its default, so that the cells of configs written before that setting keep
        their hashes (and their results stay valid)."""
        values = asdict(self)
        if self.matmul == DEFAULT_MATMUL:
            del values["matmul"]
        return values


def dataset_options(config: Mapping, dataset: str) -> dict:
    try:
        return dict(config["datasets"][dataset])
    except KeyError:
        raise ConfigError(f"dataset {dataset!r} is not in the config's `datasets` ({', '.join(config['datasets'])})") from None


def backbone_options(config: Mapping, alias: str, dataset: str | None = None) -> dict:
    """The ``backbones`` entry of ``alias`` as used on ``dataset``: an ``input_size`` given per dataset
    (``{fashion_mnist: 64, cifar10_jpeg: 96}``, each chosen on that dataset's validation) becomes that
    dataset's size, so one alias (one backbone, one set of weights) serves every dataset of a grid."""
    try:
        options = dict(config["backbones"][alias])
    except KeyError:
        raise ConfigError(f"backbone alias {alias!r} is not in the config's `backbones` ({', '.join(config['backbones'])})") from None
    sizes = options.get("input_size")
    if isinstance(sizes, Mapping):
        if dataset is None:
            raise ConfigError(f"`backbones.{alias}.input_size` is given per dataset; this use needs one "
                              f"dataset ({', '.join(sizes)})")
        if dataset not in sizes:
            raise ConfigError(f"`backbones.{alias}.input_size` has no size for dataset {dataset!r}; add "
                              f"`{dataset}: <pixels>` to it (it has {', '.join(sizes) or 'none'})")
        options["input_size"] = sizes[dataset]
    return options


def dump(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False)


#: the clustering settings of the config's `brcd` section (rule cluster, brcd.cluster, BRCD's loss): the
#: defaults; here, not in brcd.distill, so that reading them (the Snakefile does) does not import torch
DEFAULT_CLUSTERS = 10
DEFAULT_MARGIN = 0.5
DEFAULT_CLUSTER_RANGE = (2, 20)


def cluster_settings(brcd_section: Mapping | None) -> dict:
    """The clustering part of the config's ``brcd`` section, with defaults, checked."""
    section = dict(brcd_section or {})
    clusters = section.get("clusters", DEFAULT_CLUSTERS)
    if clusters != "auto" and (isinstance(clusters, bool) or not isinstance(clusters, numbers.Integral) or clusters < 2):
        raise ConfigError(f"`brcd.clusters` must be an integer >= 2 or \"auto\"; got {clusters!r}")
    cluster_range = tuple(int(v) for v in section.get("cluster_range", DEFAULT_CLUSTER_RANGE))
    if len(cluster_range) != 2 or cluster_range[0] < 2 or cluster_range[1] < cluster_range[0]:
        raise ConfigError(f"`brcd.cluster_range` must be [low, high] with 2 <= low <= high; got {list(cluster_range)}")
    margin = float(section.get("margin", DEFAULT_MARGIN))
    if not 0.0 <= margin <= 1.0:
        raise ConfigError(f"`brcd.margin` must lie in [0, 1] (centres are means of ±1 codes); got {margin}")
    return {"clusters": clusters if clusters == "auto" else int(clusters),
            "cluster_range": list(cluster_range), "margin": margin}


def check_k_feasible(k_wanted, cluster_range, n: int, distinct: int) -> list[int] | None:
    """Raise a ConfigError before any k-means runs when K cannot work."""
    if k_wanted != "auto":
        if k_wanted > n:
            raise ConfigError(
                f"`brcd.clusters` = {k_wanted} exceeds the {n} training images; lower `brcd.clusters` to at most {n}"
            )
        if k_wanted > distinct:
            raise ConfigError(
                f"`brcd.clusters` = {k_wanted} exceeds the {distinct} distinct teacher codes of the training images; "
                f"lower `brcd.clusters` to at most {distinct} (or retrain the teacher)"
            )
        return None
    # A silhouette needs at least one cluster with two members: K <= n - 1.
    hi = min(cluster_range[1], n - 1, distinct)
    if hi < cluster_range[0]:
        raise ConfigError(
            f"`brcd.cluster_range` = {list(cluster_range)} leaves no feasible K for {n} training images with "
            f"{distinct} distinct teacher codes; lower `brcd.cluster_range` or set `brcd.clusters` to an integer"
        )
    return [cluster_range[0], hi]
