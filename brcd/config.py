"""Grid configs: loading, JSON-schema validation with defaults, registry checks.

The schema (``workflow/schemas/config.schema.yaml``) checks shapes and types;
:func:`check_config` then checks every axis value against the registry that
will have to resolve it, so that a bad config fails before any job starts,
naming the key and the allowed values.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from brcd.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _validator_with_defaults():
    """A Draft 2020-12 validator (as snakemake uses) that also fills in schema ``default`` values."""
    from jsonschema import Draft202012Validator, validators

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": set_defaults})


def validate_schema(config: dict, source: str = "config") -> dict:
    """Validate ``config`` in place against the schema and fill in defaults."""
    from jsonschema import ValidationError

    if isinstance(config.get("brcd"), Mapping) and "lambda" in config["brcd"]:
        raise ConfigError(f"{source}: key `brcd.lambda` moved to the top-level `lambda` (a number, a list of "
                          "candidates, or a mapping with `default` and per-method entries), which every "
                          "distillation method reads; move it there")
    validator = _validator_with_defaults()(_schema())
    try:
        validator.validate(config)
    except ValidationError as exc:
        key = ".".join(str(p) for p in exc.absolute_path) or "<top level>"
        raise ConfigError(f"{source}: key `{key}`: {exc.message}") from None
    return config


def load_config(path: str | os.PathLike, check_registries: bool = True) -> dict:
    """Read, schema-validate (filling defaults) and check a grid config.

    Stage commands pass ``check_registries=False``: Snakemake already checked
    the grid, each stage resolves the names it uses through the registries
    anyway (with the same clear errors), and skipping the full check keeps
    model libraries out of jobs that never build a model.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass one of config/*.yaml")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys")
    validate_schema(config, str(path))
    if check_registries:
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
    from brcd.evaluate import PARADIGMS

    return [name for name in PARADIGMS.names() if PARADIGMS.get(name).needs_student]


def _hash_names() -> list[str]:
    from brcd.hashing import OBJECTIVES

    return OBJECTIVES.names()


def _check_datasets(config: Mapping, source: str) -> None:
    from brcd.data.checks import check_dataset_entries

    check_dataset_entries(config, source)


def _check_kd_settings(config: Mapping, source: str) -> None:
    from brcd.distill import check_kd_settings

    check_kd_settings(config, source)


def _check_lambda(config: Mapping, source: str) -> None:
    from brcd.tuning import check_lambda

    check_lambda(config, source)


def _check_backbones(config: Mapping, source: str) -> None:
    from brcd.models import check_backbone_entries

    check_backbone_entries(config, source)


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
#: per-method distillation settings and the λ grids.
CONFIG_CHECKS: list[Callable[[Mapping, str], None]] = [_check_datasets, _check_backbones, _check_kd_settings, _check_lambda]


def dataset_options(config: Mapping, dataset: str) -> dict:
    try:
        return dict(config["datasets"][dataset])
    except KeyError:
        raise ConfigError(f"dataset {dataset!r} is not in the config's `datasets` ({', '.join(config['datasets'])})") from None


def backbone_options(config: Mapping, alias: str) -> dict:
    try:
        return dict(config["backbones"][alias])
    except KeyError:
        raise ConfigError(f"backbone alias {alias!r} is not in the config's `backbones` ({', '.join(config['backbones'])})") from None


def dump(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False)
