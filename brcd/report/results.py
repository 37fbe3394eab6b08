"""Loading the report's inputs: every results file of the grid, read and checked.

The files are those :func:`brcd.workflow.report_inputs` lists for the config: the
metrics file of every cell, the per-query values beside each, the timing files, the
λ selections and Snakemake's benchmark files; and the record of the grid's Snakemake
runs, when there is one (:func:`brcd.runs.grid_runs`). Each must hold what its place in the
layout says; a missing, stale or misplaced file is a named error that says which rule
rebuilds it, raised before any table is drawn.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from brcd.cells import Cell
from brcd.errors import DataError, MetadataMismatchError
from brcd.io import rebuild_hint, snakemake_command
from brcd.report.grid import BenchmarkRow, GridResults, method_key
from brcd.runs import grid_runs
from brcd.tuning import METHOD_KEYS, check_selection, read_selection
from brcd.workflow import ReportInputs, report_inputs

if TYPE_CHECKING:
    import numpy as np

#: at most this many missing files are listed in the error message
MISSING_LISTED = 10


def load_results(config: Mapping, results_dir: str | os.PathLike = ".", config_path: str | None = None) -> GridResults:
    """Read every input file of the grid; all missing files are reported at once, before any work."""
    root = Path(results_dir)
    inputs = report_inputs(config)
    missing = [(path, rule) for path, rule in inputs.required() if not (root / path).is_file()]
    if missing:
        raise _missing_error(missing, root, config_path)
    metrics = _read_metrics(root, inputs.metrics, config)
    per_query = {key: _read_queries(root / inputs.per_query[key], metrics[key]) for key in inputs.metrics}
    _check_same_queries(per_query, root, inputs.per_query)
    encoder = {key: _read_checked(root, path, {"dataset": key[0], "backbone": key[1]})
               for key, path in inputs.encoder_timing.items()}
    search = {bits: _read_checked(root, path, {"bits": bits})
              for bits, path in inputs.search_timing.items()}
    selections = {method_key(method): _read_selection(root / path, method, config)
                  for method, path in inputs.selections.items()}
    benchmarks, training_cost = _read_benchmarks(root, inputs)
    return GridResults(config, metrics, encoder, search, {key: ap for key, (_, ap) in per_query.items()}, selections,
                       benchmarks, training_cost, grid_runs(root))


def _read_metrics(root: Path, paths: Mapping, config: Mapping) -> dict[tuple, dict]:
    """(cell, paradigm) -> its metrics file, checked against the cell; ``_key`` records the key."""
    metrics = {}
    for (cell, paradigm), path in paths.items():
        expected = {"student": None, "kd": None, "variant": None, **cell.parameters(), "paradigm": paradigm,
                    "topk": int(config["datasets"][cell.dataset]["topk"])}
        record = _read_checked(root, path, expected)
        record["_key"] = (cell, paradigm)
        if "metrics" not in record:
            raise DataError(f"metrics file {root / path} has no `metrics` entry; {rebuild_hint(path)}")
        metrics[(cell, paradigm)] = record
    return metrics


def _read_benchmarks(root: Path, inputs: ReportInputs) -> tuple[dict, dict]:
    """Per rule, and per distillation method for its student training: (its jobs, the benchmark
    rows of those that have one)."""
    records = {path: read_benchmark(root / path) for paths in inputs.benchmarks.values() for path in paths}

    def found(paths: list[str]) -> tuple[int, list[BenchmarkRow]]:
        return len(paths), [records[path] for path in paths if records[path]]

    return ({rule: found(paths) for rule, paths in inputs.benchmarks.items()},
            {kd: found(paths) for kd, paths in inputs.student_training.items()})


def _read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); {rebuild_hint(path)}") from None


def _missing_error(missing: list[tuple[str, str]], root: Path, config_path: str | None) -> DataError:
    """Name the missing files and how to build them (rule and the snakemake call)."""
    listed = "\n".join(f"  {path}  (rule `{rule}`)" for path, rule in missing[:MISSING_LISTED])
    more = f"\n  ... and {len(missing) - MISSING_LISTED} more" if len(missing) > MISSING_LISTED else ""
    return DataError(
        f"{len(missing)} input file(s) of the report are missing in {root.resolve()}:\n{listed}{more}\n"
        f"Build them with `{snakemake_command(missing[0][0], config=config_path)}` (one file) or "
        f"`{snakemake_command(config=config_path)}` (the whole grid, report included), or pass --results-dir "
        "pointing at the folder that holds results/."
    )


def _read_checked(root: Path, path: str, expected: Mapping) -> dict:
    """Read a JSON input; it must hold what its place in the layout says (a renamed or stale file would
    corrupt a table). ``_source`` records the path for later messages."""
    record = _read_json(root / path)
    for key, value in expected.items():
        if record.get(key) != value:
            raise MetadataMismatchError(
                f"{root / path} says {key} = {record.get(key)!r} but its place in the grid says {value!r}; "
                f"{rebuild_hint(path)}"
            )
    record["_source"] = path
    return record


def read_benchmark(path: Path) -> BenchmarkRow | None:
    """The last record of a Snakemake benchmark file (None when the job has none: not run by
    Snakemake, or run before benchmarks were kept)."""
    import csv

    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows:
        return None

    def number(key: str) -> float | None:
        try:
            return float(rows[-1][key])
        except (KeyError, TypeError, ValueError):  # "NA" where psutil could not measure
            return None

    seconds = number("s")
    return None if seconds is None else BenchmarkRow(seconds, number("max_rss"), number("cpu_time"),
                                                      path.stat().st_mtime)


def _read_selection(path: Path, method: Cell, config: Mapping) -> dict:
    """A method's λ selection, checked against the method and the config's λ grid."""
    record = read_selection(path, dict(zip(METHOD_KEYS, method_key(method))))
    check_selection(record, config, record["kd"], path)
    return record


def _read_queries(path: Path, record: Mapping) -> tuple["np.ndarray", "np.ndarray"]:
    """(query dataset indices, AP@K per query) of one evaluation, checked against its metrics file."""
    from brcd.evaluate import CELL_KEYS, read_per_query

    keys = (*CELL_KEYS, "paradigm", "topk", "config_hash")
    columns = read_per_query(path, {key: record.get(key) for key in keys})
    return columns["index"], columns[f"ap@{record['topk']}"]


def _check_same_queries(per_query: Mapping, root: Path, paths: Mapping) -> None:
    """Paired comparisons need the same queries, in the same order, in every cell of a dataset."""
    import numpy as np

    first: dict[str, tuple] = {}
    for (cell, paradigm), (index, _) in per_query.items():
        seen = first.setdefault(cell.dataset, (index, paths[(cell, paradigm)]))
        if not np.array_equal(seen[0], index):
            raise MetadataMismatchError(
                f"{root / paths[(cell, paradigm)]} and {root / seen[1]} hold different queries of dataset "
                f"{cell.dataset!r} (another split?); rebuild the stale one (for {paths[(cell, paradigm)]}: "
                f"{rebuild_hint(paths[(cell, paradigm)])})"
            )
