"""The tidy results table beside a report, ``reports/{name}.parquet``: one row per cell x paradigm
x seed with every parameter, metric, training record and config hash (the report is rendered
from the same results), and its reader for ``brcd compare-conclusions``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from brcd.lambdas import NO_KD
from brcd.report.grid import GridResults, shown_in_tables
from brcd.report.statements import COLUMN_KEYS, regenerate_hint


def _metric_columns(record: Mapping) -> dict[str, float | None]:
    """How the metric names of a metrics file become column names: ``map@10`` -> ``map_at_k``,
    ``precision@k`` {``10``: ...} -> ``precision_at_10``; the PR curve is left out."""
    topk = record["topk"]
    out: dict[str, float | None] = {}
    for name, value in record["metrics"].items():
        if name == "pr_curve":
            continue
        if isinstance(value, Mapping):  # precision@k
            out.update({f"{name.replace('@k', '_at_')}{cut}": v for cut, v in value.items()})
        else:
            out[name.replace(f"@{topk}", "_at_k").replace("@", "_at_")] = value
    return out


def tidy_rows(results: GridResults) -> list[dict]:
    """One row per cell × paradigm × seed: every parameter, metric, training record and config hash."""
    rows = []
    for (cell, paradigm), record in sorted(results.metrics.items(), key=lambda item: item[1]["_source"]):
        training = record.get("training") or {}
        chosen = None if cell.student is None else results.selected_lambda(cell, paradigm)
        rows.append({
            **{key: getattr(cell, key) for key in ("dataset", "bits", "hash", "teacher", "student", "kd", "variant",
                                                   "seed")},
            "paradigm": paradigm,
            "lambda": record.get("lambda"),
            "lambda_selected": chosen,
            "is_selected": None if chosen is None else record.get("lambda") == chosen,
            "lambda_at_edge": None if chosen is None or cell.kd == NO_KD else results.lambda_at_edge(cell, paradigm),
            "in_tables": shown_in_tables(results, cell, paradigm),
            "topk": int(record["topk"]),
            "queries": record.get("counts", {}).get("queries"),
            "database": record.get("counts", {}).get("database"),
            **_metric_columns(record),
            **{f"train_{key}": value for key, value in training.items()},
            "config_hash": record.get("config_hash"),
            "metrics_file": record["_source"],
        })
    return rows


def write_tidy_table(results: GridResults, path: Path) -> None:
    import pandas as pd
    import pyarrow as pa

    from brcd.io import write_parquet

    table = pa.Table.from_pandas(pd.DataFrame(tidy_rows(results)), preserve_index=False)
    write_parquet(path, table, {"name": results.config["name"], "config": dict(results.config)})


def read_tidy_table(path: str | os.PathLike):
    """A report's tidy table (``reports/{name}.parquet``) and its grid name."""
    from brcd.io import read_parquet

    table, metadata = read_parquet(path, "tidy table", regenerate_hint(path),
                                   columns=[*COLUMN_KEYS, "kd", "variant", "seed", "lambda", "is_selected",
                                            "in_tables", "map_at_k", "train_val_map"])
    return str(metadata.get("name")), table
