"""``brcd select``: each method's λ chosen on validation only (a fair comparison).

A distilled student minimises L_hash + λ·L_kd. Relational and contrastive
losses live on very different scales, so one λ for all would favour some
methods by accident. Every method therefore gets the same tuning budget:

1. **Grid.** The config's ``lambda`` is a number, a list, or a mapping of
   method -> number or list with a ``default`` for the others
   (:func:`lambda_grid`). ``none`` has no L_kd: its only candidate is 0.
2. **Candidates.** With the *tuning seed* (the first of ``seeds``) every λ of
   the grid is its own cell, ``.../{kd}/lambda{λ}/seed{seed}``, with its own
   files; one job trains all candidates of a method (rules
   ``train_candidates*``) and one evaluates them (``evaluate_candidates*``).
3. **Selection** (this module's command, rule ``select_lambda``): per
   (dataset, bits, hash, teacher, student, method) and paradigm, the λ with the
   highest *validation* mAP of the head selected for that paradigm (``sym``:
   student database codes; ``asym``: the teacher's), which saw only the train,
   validation and database splits — read from the metadata of the candidates'
   code files (``codes.parquet`` holds the head selected for sym,
   ``codes_asym.parquet`` the one for asym, each with its validation mAP, the
   checkpoint's best), so the job needs no torch. Ties go to the first λ of
   the grid. Query labels never reach it.
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
from brcd.lambdas import format_lambda, lambda_grid, tuning_seed

log = logging.getLogger(__name__)

#: the heads a student keeps, one per paradigm (brcd.encode.SELECTIONS["student"])
PARADIGM_HEADS = ("sym", "asym")
#: what a λ selection is made for: one student method of one report column, across seeds
METHOD_KEYS = ("dataset", "bits", "hash", "teacher", "student", "kd")


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


def candidate_scores(files: Mapping[float, Sequence[str]], expected: Mapping) -> dict[float, dict[str, float]]:
    """λ -> {paradigm: validation mAP of the head selected for it}, from each λ's code files: the metadata of
    a student's code file names its head (``selection``) and that head's validation mAP (``val_map``, the
    checkpoint's best), and is checked against ``expected`` and the λ."""
    from brcd.io import check_metadata, read_parquet_metadata, rebuild_hint

    scores = {}
    for lam, paths in files.items():
        heads: dict[str, float] = {}
        for path in paths:
            metadata = read_parquet_metadata(path, "code file")
            check_metadata(metadata, {**expected, "lambda": float(lam)}, f"code file {path}",
                           f"Pass the code files of this method's candidate λ = {format_lambda(lam)}, seed "
                           f"{expected.get('seed')}.")
            head = metadata.get("selection")
            if head not in PARADIGM_HEADS or head in heads:
                raise ConfigError(f"--candidates: {path} holds the head selected for {head!r}"
                                  + (", like another file of this λ" if head in heads else "")
                                  + f"; pass one code file per head ({', '.join(PARADIGM_HEADS)}) of each λ")
            if not isinstance(metadata.get("val_map"), (int, float)):
                raise DataError(f"code file {path} records no validation mAP (`val_map`) of its head; "
                                f"{rebuild_hint(path)}")
            heads[head] = float(metadata["val_map"])
        missing = [head for head in PARADIGM_HEADS if head not in heads]
        if missing:
            raise ConfigError(f"--candidates gives no code file of the head selected for {', '.join(missing)} of "
                              f"λ = {format_lambda(lam)}; pass codes.parquet (sym) and codes_asym.parquet (asym) "
                              "of every candidate")
        scores[lam] = {paradigm: heads[paradigm] for paradigm in PARADIGM_HEADS}
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

    from brcd.io import build_hint, check_metadata, rebuild_hint

    path = Path(path)
    if not path.is_file():
        raise DataError(f"λ selection {path} not found; {build_hint(path)}")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); {rebuild_hint(path)}") from None
    if expected:
        check_metadata(record, expected, f"λ selection {path}",
                       f"It belongs to another cell; {rebuild_hint(path)}.")
    return record


def check_selection(record: Mapping, config: Mapping, kd: str, path) -> None:
    """A selection made from another λ grid or tuning seed than the config's is stale."""
    from brcd.io import rebuild_hint

    grid, seed = lambda_grid(config, kd), tuning_seed(config)
    if record["grid"] != grid or int(record["tuning_seed"]) != seed:
        raise ConfigError(f"{path} chose among λ {record['grid']} with seed {record['tuning_seed']}, but the config's "
                          f"grid for {kd!r} is {grid} with tuning seed {seed}; {rebuild_hint(path)}")


def selected_lambdas(record: Mapping) -> dict[str, float]:
    """paradigm -> selected λ."""
    return {paradigm: float(entry["lambda"]) for paradigm, entry in record["paradigms"].items()}


# --------------------------------------------------------------------------- CLI


def configure_parser(parser) -> None:
    from brcd.cells import add_cell_arguments

    add_cell_arguments(parser, student=True)
    parser.add_argument("--config", required=True, help="grid config YAML")
    parser.add_argument("--candidates", nargs="+", required=True, metavar="LAMBDA=CODES",
                        help="each candidate's λ and code files (tuning seed), codes.parquet and codes_asym.parquet "
                             "(the heads selected for sym and asym, whose metadata hold their validation mAP), e.g. "
                             "0.3=.../lambda0.3/seed0/codes.parquet 0.3=.../lambda0.3/seed0/codes_asym.parquet")
    parser.add_argument("--out", required=True, help=".../{kd}/selection.json")


def parse_candidates(items: Sequence[str]) -> dict[float, list[str]]:
    """``LAMBDA=PATH`` items -> λ -> its paths, in the order given."""
    out: dict[float, list[str]] = {}
    for item in items:
        lam, sep, path = item.partition("=")
        if not sep or not path:
            raise ConfigError(f"--candidates: {item!r} is not LAMBDA=PATH")
        try:
            out.setdefault(float(lam), []).append(path)
        except ValueError:
            raise ConfigError(f"--candidates: {lam!r} is not a number") from None
    return out


def run(args) -> None:
    from brcd.config import load_config

    config = load_config(args.config)
    if args.seed != tuning_seed(config):
        raise ConfigError(f"--seed {args.seed}: λ is selected on the tuning seed, the first of `seeds` "
                          f"({tuning_seed(config)})")
    candidates = parse_candidates(args.candidates)
    grid = lambda_grid(config, args.kd)
    by_text = {format_lambda(lam): paths for lam, paths in candidates.items()}
    if sorted(by_text) != sorted(map(format_lambda, grid)):
        raise ConfigError(f"--candidates gives λ {sorted(candidates)} but the config's grid for {args.kd!r} is "
                          f"{grid}; pass the code files of every λ of `lambda`")
    keys = {key: getattr(args, key) for key in METHOD_KEYS}
    ordered = {lam: by_text[format_lambda(lam)] for lam in grid}
    scores = candidate_scores(ordered, {**keys, "seed": int(args.seed)})
    selection = select_lambda(scores)
    write_selection(args.out, keys, grid, args.seed, selection)
    for paradigm, entry in selection.items():
        log.info("%s/%s %s: λ = %s (validation mAP %s)", args.kd, args.bits, paradigm, format_lambda(entry["lambda"]),
                 ", ".join(f"{k}: {v:.4f}" for k, v in entry["candidates"].items()))
