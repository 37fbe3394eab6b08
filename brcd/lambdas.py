"""The λ vocabulary: grids of candidate weights, their names in paths, the tuning seed.

A distilled student minimises L_hash + λ·L_kd, with λ chosen on validation per
method (:mod:`brcd.tuning`, rule ``select_lambda``). This module is what every
layer needs to *name* those runs -- the config's ``lambda`` grids, the
``lambda{λ}`` / ``selected`` path components, the tuning seed -- without the
selection stage itself: cell hashes (:mod:`brcd.cells`), the Snakemake rules
and the report all read it. It imports only :mod:`brcd.errors`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from brcd.errors import ConfigError
from brcd.options import as_number

#: the kd method without a distillation term: its only λ is 0
NO_KD = "none"
#: path component of the runs of the other seeds, which read their λ from selection.json
SELECTED = "selected"
CANDIDATE_PREFIX = "lambda"
DEFAULT_LAMBDA = 1.0


def format_lambda(value: float) -> str:
    """The canonical text of a λ in paths and JSON keys: 0.3, 1, 3, 1e-05."""
    return f"{float(value):g}"


def _as_grid(value, key: str) -> list[float]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ConfigError(f"`{key}` is an empty list; give at least one λ")
    grid = []
    for item in values:
        item = as_number(item, key, minimum=0)  # finite: a λ names a path
        if float(format_lambda(item)) != float(item):  # a λ is named by its text in paths and checkpoints
            raise ConfigError(f"`{key}`: λ {item!r} needs more than 6 significant digits; round it "
                              f"(e.g. {format_lambda(item)})")
        grid.append(float(item))
    if len({format_lambda(x) for x in grid}) != len(grid):
        raise ConfigError(f"`{key}` lists a λ twice: {values}")
    return grid


def lambda_grid(config: Mapping, kd: str) -> list[float]:
    """The λ candidates of method ``kd`` (``[0.0]`` for ``none``)."""
    if kd == NO_KD:
        return [0.0]
    spec = config.get("lambda", DEFAULT_LAMBDA)
    if isinstance(spec, Mapping):
        key = kd if kd in spec else "default"
        return _as_grid(spec.get(key, DEFAULT_LAMBDA), f"lambda.{key}")
    return _as_grid(spec, "lambda")


def grid_centre(grid: Sequence[float]) -> float:
    """The centre of a λ grid (its method's scale, e.g. the published weight): the middle of its sorted
    values; of an even grid the upper of the two middle ones (a grid widened below its centre by a decade
    to hold the gradient-norm ratio, ``benchmarks/kd_scale.py``, keeps that centre)."""
    values = sorted(float(v) for v in grid)
    return values[len(values) // 2]


def at_grid_edge(grid: Sequence[float], lam: float) -> bool:
    """True when ``lam`` is the smallest or largest value of a grid of several values: its best λ may
    lie beyond the grid (the report flags such choices)."""
    values = [float(v) for v in grid]
    return len(values) > 1 and float(lam) in (min(values), max(values))


def check_lambda(config: Mapping, source: str = "config") -> None:
    """Config check (before any job): every grid parses, and per-method keys name methods of the grid."""
    spec = config.get("lambda", DEFAULT_LAMBDA)
    if isinstance(spec, Mapping):
        unlisted = [kd for kd in config.get("kd", []) if kd != NO_KD and kd not in spec]
        if "default" not in spec and unlisted:
            raise ConfigError(f"{source}: `lambda` gives no `default` and no entry for {', '.join(unlisted)}; "
                              "add `default: [...]` (every method gets the same tuning budget)")
        allowed = ["default", *config.get("kd", [])]
        unknown = [key for key in spec if key not in allowed]
        if unknown:
            raise ConfigError(f"{source}: `lambda` names {', '.join(map(repr, unknown))}, which the grid's `kd` "
                              f"does not list; allowed keys: {', '.join(allowed)}")
        if NO_KD in spec:
            raise ConfigError(f"{source}: `lambda.none`: the student without KD has no L_kd to weight; remove it")
    for kd in config.get("kd", []):
        lambda_grid(config, kd)


def tuning_seed(config: Mapping) -> int:
    """The seed whose runs try every λ (the first of ``seeds``)."""
    return int(config["seeds"][0])


def variant_of(lam: float) -> str:
    return f"{CANDIDATE_PREFIX}{format_lambda(lam)}"


def candidate_lambda(variant: str) -> float | None:
    """``lambda0.3`` -> 0.3; ``selected`` -> None."""
    if variant == SELECTED:
        return None
    if not variant.startswith(CANDIDATE_PREFIX):
        raise ConfigError(f"student run {variant!r} is neither {SELECTED!r} nor {CANDIDATE_PREFIX}<λ>")
    try:
        return float(variant[len(CANDIDATE_PREFIX):])
    except ValueError:
        raise ConfigError(f"student run {variant!r}: {variant[len(CANDIDATE_PREFIX):]!r} is not a number") from None


def variants(config: Mapping, kd: str, seed: int) -> list[str]:
    """The runs of one method and seed: every candidate with the tuning seed, else the selected λ."""
    if int(seed) == tuning_seed(config):
        return [variant_of(lam) for lam in lambda_grid(config, kd)]
    return [SELECTED]


def candidate_groups(config: Mapping, rule: str = "train_candidates") -> dict[str, tuple[list[float], list[str]]]:
    """Snakemake rule name -> (λ grid, methods) of the rules that handle all λ candidates of one method
    and seed in one job: ``train_candidates*`` train them, ``evaluate_candidates*`` evaluate them.

    One job trains all candidates of one method and seed in one process (they share start-up
    and the loading of banks, teacher and validation data; their evaluation shares start-up and
    the reading of the split and the teacher's codes), so a rule's outputs are one grid's
    candidates: the methods on the ``default`` grid (or the one grid of a plain list) share
    rule ``{rule}``; a method with its own grid, and ``none`` (λ = 0), gets ``{rule}_<method>``.
    """
    spec = config.get("lambda", DEFAULT_LAMBDA)
    own = {key for key in spec if key != "default"} if isinstance(spec, Mapping) else set()
    groups: dict[str, tuple[list[float], list[str]]] = {}
    for kd in config["kd"]:
        name = f"{rule}_{kd}" if kd in own or kd == NO_KD else rule
        groups.setdefault(name, (lambda_grid(config, kd), []))[1].append(kd)
    return groups


def candidate_paths(template: str, grid: Sequence[float]) -> list[str]:
    """A student path template with its ``{variant}`` filled in for every λ of ``grid``."""
    return [template.replace("{variant}", variant_of(lam)) for lam in grid]


def selected_seeds(config: Mapping) -> list[int]:
    """The seeds that train only the selected λ (every seed but the tuning seed): one job trains them
    all for one method (rule ``train_student``), sharing the start-up and the student's data."""
    return [int(seed) for seed in config["seeds"] if int(seed) != tuning_seed(config)]


def selected_paths(template: str, config: Mapping) -> list[str]:
    """A student path template with ``{variant}`` = selected and ``{seed}`` filled in for every
    :func:`selected_seeds` (the outputs of one ``train_student`` job)."""
    return [template.replace("{variant}", SELECTED).replace("{seed}", str(seed)) for seed in selected_seeds(config)]


#: a student cell's variant when none is named: λ = :data:`DEFAULT_LAMBDA`
DEFAULT_VARIANT = variant_of(DEFAULT_LAMBDA)
