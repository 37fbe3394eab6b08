"""``brcd select``: each method's λ chosen on validation only (a fair comparison).

A distilled student minimises L_hash + λ·L_kd. Relational and contrastive
losses live on very different scales, so one λ for all would favour some
methods by accident. Every method therefore gets the same tuning budget:

1. **Grid.** The config's ``lambda`` is a number, a list, or a mapping of
   method -> number or list with a ``default`` for the others
   (:func:`lambda_grid`). ``none`` has no L_kd: its only candidate is 0.
2. **Candidates.** With the *tuning seed* (the first of ``seeds``) every λ of
   the grid is its own cell, ``.../{kd}/lambda{λ}/seed{seed}``, scheduled,
   rerun and parallelised by Snakemake like any other.
3. **Selection** (this module's command, rule ``select_lambda``): per
   (dataset, bits, hash, teacher, student, method) and paradigm, the λ with the
   highest *validation* mAP of the head selected for that paradigm (``sym``:
   student database codes; ``asym``: the teacher's) — read from the
   candidates' checkpoints, which saw only the train, validation and database
   splits. Ties go to the first λ of the grid. Query labels never reach it.
4. **Other seeds** train only the selected λ (``.../{kd}/selected/seed{seed}``,
   rule ``train_student`` reading ``selection.json``): one training when both
   paradigms selected the same λ, else one per λ.

``selection.json``::

    {"dataset", "bits", "hash", "teacher", "student", "kd", "tuning_seed",
     "grid": [λ, ...],
     "paradigms": {"sym": {"lambda": λ*, "criterion": "validation mAP@K of the sym head",
                           "candidates": {"0.3": val mAP, "1": ..., ...}},
                   "asym": {...}}}
"""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

from brcd.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: the kd method without a distillation term: its only λ is 0
NO_KD = "none"
#: the heads a student keeps, one per paradigm (brcd.encode.SELECTIONS["student"])
PARADIGM_HEADS = ("sym", "asym")
#: what a λ selection is made for: one student method of one report column, across seeds
METHOD_KEYS = ("dataset", "bits", "hash", "teacher", "student", "kd")
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
        if isinstance(item, bool) or not isinstance(item, (int, float)) or item < 0:
            raise ConfigError(f"`{key}` must hold non-negative numbers; got {item!r}")
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


def candidate_groups(config: Mapping) -> dict[str, tuple[list[float], list[str]]]:
    """Snakemake rule name -> (λ grid, methods) of the rules that train λ candidates.

    One job trains all candidates of one method and seed in one process (they share start-up
    and the loading of banks, teacher and validation data), so a rule's outputs are one grid's
    candidates: the methods on the ``default`` grid (or the one grid of a plain list) share
    rule ``train_candidates``; a method with its own grid, and ``none`` (λ = 0), gets
    ``train_candidates_<method>``.
    """
    spec = config.get("lambda", DEFAULT_LAMBDA)
    own = {key for key in spec if key != "default"} if isinstance(spec, Mapping) else set()
    groups: dict[str, tuple[list[float], list[str]]] = {}
    for kd in config["kd"]:
        name = f"train_candidates_{kd}" if kd in own or kd == NO_KD else "train_candidates"
        groups.setdefault(name, (lambda_grid(config, kd), []))[1].append(kd)
    return groups


def candidate_paths(template: str, grid: Sequence[float]) -> list[str]:
    """A student path template with its ``{variant}`` filled in for every λ of ``grid``."""
    return [template.replace("{variant}", variant_of(lam)) for lam in grid]


# --------------------------------------------------------------------------- selection


def select_lambda(scores: Mapping[float, Mapping[str, float]]) -> dict:
    """Per paradigm, the λ with the highest validation mAP (first of the grid on ties).

    ``scores``: λ -> {paradigm: validation mAP of the head selected for it}, in grid order.
    """
    if not scores:
        raise DataError("no λ candidates to select from")
    out = {}
    for paradigm in PARADIGM_HEADS:
        candidates = {format_lambda(lam): float(by_head[paradigm]) for lam, by_head in scores.items()}
        best = max(scores, key=lambda lam: (candidates[format_lambda(lam)], -list(scores).index(lam)))
        out[paradigm] = {"lambda": float(best),
                         "criterion": f"validation mAP@K of the head selected for {paradigm}",
                         "candidates": candidates}
    return out


def candidate_scores(checkpoints: Mapping[float, str], expected: Mapping) -> dict[float, dict[str, float]]:
    """λ -> {paradigm: validation mAP} from the candidates' checkpoints (metadata checked)."""
    from brcd.checkpoint import load_checkpoint

    scores = {}
    for lam, path in checkpoints.items():
        bundle = load_checkpoint(path, {**expected, "lambda": {p: float(lam) for p in PARADIGM_HEADS}})
        scores[lam] = {paradigm: float(bundle["best"][paradigm]["map"]) for paradigm in PARADIGM_HEADS}
    return scores


def write_selection(path, cell_keys: Mapping, grid: Sequence[float], seed: int,
                    selection: Mapping[str, dict]) -> dict:
    from brcd.io import write_json

    record = {**cell_keys, "tuning_seed": int(seed), "grid": [float(x) for x in grid], "paradigms": dict(selection)}
    write_json(path, record)
    return record


def read_selection(path, expected: Mapping | None = None) -> dict:
    """A ``selection.json``, checked against the cell it should belong to."""
    import json
    from pathlib import Path

    from brcd.io import check_metadata

    path = Path(path)
    if not path.is_file():
        raise DataError(f"λ selection {path} not found; run rule `select_lambda` (snakemake builds it from the "
                        "tuning seed's candidates)")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); delete it and rerun snakemake") from None
    if expected:
        check_metadata(record, expected, f"λ selection {path}",
                       "It belongs to another cell; delete it and rerun snakemake (rule `select_lambda`).")
    return record


def check_selection(record: Mapping, config: Mapping, kd: str, path) -> None:
    """A selection made from another λ grid or tuning seed than the config's is stale."""
    grid, seed = lambda_grid(config, kd), tuning_seed(config)
    if record["grid"] != grid or int(record["tuning_seed"]) != seed:
        raise ConfigError(f"{path} chose among λ {record['grid']} with seed {record['tuning_seed']}, but the config's "
                          f"grid for {kd!r} is {grid} with tuning seed {seed}; rerun snakemake so that rule "
                          "`select_lambda` redoes it")


def selected_lambdas(record: Mapping) -> dict[str, float]:
    """paradigm -> selected λ."""
    return {paradigm: float(entry["lambda"]) for paradigm, entry in record["paradigms"].items()}


# --------------------------------------------------------------------------- CLI


def configure_parser(parser) -> None:
    from brcd.cells import add_cell_arguments

    add_cell_arguments(parser, student=True)
    parser.add_argument("--config", required=True, help="grid config YAML")
    parser.add_argument("--candidates", nargs="+", required=True, metavar="LAMBDA=MODEL",
                        help="each candidate's λ and model.pt (tuning seed), e.g. 0.3=.../lambda0.3/seed0/model.pt")
    parser.add_argument("--out", required=True, help=".../{kd}/selection.json")


def parse_candidates(items: Sequence[str]) -> dict[float, str]:
    out = {}
    for item in items:
        lam, sep, path = item.partition("=")
        if not sep or not path:
            raise ConfigError(f"--candidates: {item!r} is not LAMBDA=PATH")
        try:
            out[float(lam)] = path
        except ValueError:
            raise ConfigError(f"--candidates: {lam!r} is not a number") from None
    return out


def run(args) -> None:
    from brcd.config import load_config

    config = load_config(args.config, check_registries=False)
    if args.seed != tuning_seed(config):
        raise ConfigError(f"--seed {args.seed}: λ is selected on the tuning seed, the first of `seeds` "
                          f"({tuning_seed(config)})")
    checkpoints = parse_candidates(args.candidates)
    grid = lambda_grid(config, args.kd)
    by_text = {format_lambda(lam): path for lam, path in checkpoints.items()}
    if sorted(by_text) != sorted(map(format_lambda, grid)):
        raise ConfigError(f"--candidates gives λ {sorted(checkpoints)} but the config's grid for {args.kd!r} is "
                          f"{grid}; pass one model.pt per λ of `lambda`")
    keys = {key: getattr(args, key) for key in METHOD_KEYS}
    ordered = {lam: by_text[format_lambda(lam)] for lam in grid}
    scores = candidate_scores(ordered, {**keys, "seed": int(args.seed)})
    selection = select_lambda(scores)
    write_selection(args.out, keys, grid, args.seed, selection)
    for paradigm, entry in selection.items():
        log.info("%s/%s %s: λ = %s (validation mAP %s)", args.kd, args.bits, paradigm, format_lambda(entry["lambda"]),
                 ", ".join(f"{k}: {v:.4f}" for k, v in entry["candidates"].items()))
