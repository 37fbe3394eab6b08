"""A report's findings as data: one :class:`Statement` per finding, and their table.

The findings of a report (:func:`brcd.report.findings.findings_section`) are statements
read off paired 95% intervals of Δ mAP@K. The report also writes them, one row per
statement, to ``reports/{name}.findings.parquet`` (:data:`brcd.layout.REPORT_FINDINGS`):

- ``vs_no_kd``: a KD method against the student without KD: ``better``, ``worse`` or
  ``level`` (the interval contains 0);
- ``vs_best``: every student against the best of its column: ``best``, ``tied`` (not
  significantly worse: the bold of the tables) or ``below``;
- ``vs_brcd``: each BRCD ablation against full ``brcd``: ``better``, ``worse``, ``level``.

The report writes this table and ``brcd compare-conclusions`` (:mod:`brcd.report.conclusions`)
reads two of them, so it lives below both and needs none of the grid's results.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Mapping, Sequence

from brcd.errors import DataError

VS_NO_KD = "vs_no_kd"
VS_BEST = "vs_best"
VS_BRCD = "vs_brcd"
KINDS = (VS_NO_KD, VS_BEST, VS_BRCD)
#: what identifies a column of the report's tables
COLUMN_KEYS = ("dataset", "hash", "teacher", "student", "bits", "paradigm")
#: file-format version of the findings table
FORMAT = 1
def regenerate_hint(path: str | os.PathLike) -> str:
    """How to rebuild a report's findings or tidy table that cannot be read: the report rule (where the
    table is the workflow's own, reports/{name}...), or `brcd report` where its results are."""
    from brcd.io import rebuild_hint

    return f"{rebuild_hint(path)}; or regenerate it with `brcd report` from the results it was made of"


@dataclass(frozen=True)
class Statement:
    """One finding: ``method`` compared with ``reference`` in one column, with the paired
    interval of ``delta`` = mean(method) − mean(reference) and its ``verdict``."""

    dataset: str
    hash: str
    teacher: str
    student: str
    bits: int
    paradigm: str
    kind: str
    method: str
    reference: str
    mean: float  # the method's mean mAP@K over seeds and queries
    delta: float
    low: float
    high: float
    verdict: str

    @property
    def column(self) -> tuple:
        return tuple(getattr(self, key) for key in COLUMN_KEYS)

    @property
    def significant(self) -> bool:  # as brcd.stats.Comparison's: format.interval_text reads it
        from brcd.stats import excludes_zero

        return excludes_zero(self.low, self.high)

    @classmethod
    def compared(cls, column: Mapping, kind: str, method: str, reference: str, mean: float, c) -> "Statement":
        """From a :class:`brcd.stats.Comparison` ``c`` of ``method`` − ``reference``."""
        if kind == VS_BEST:
            verdict = "tied" if c.not_worse else "below"
        else:
            verdict = "level" if not c.significant else "better" if c.delta > 0 else "worse"
        return cls(**column, kind=kind, method=method, reference=reference, mean=mean,
                   delta=float(c.delta), low=float(c.low), high=float(c.high), verdict=verdict)

    @classmethod
    def best(cls, column: Mapping, method: str, mean: float) -> "Statement":
        return cls(**column, kind=VS_BEST, method=method, reference=method, mean=mean,
                   delta=0.0, low=0.0, high=0.0, verdict="best")


def column_label(column: tuple) -> str:
    values = dict(zip(COLUMN_KEYS, column))
    return (f"{values['dataset']}, `{values['teacher']}` → `{values['student']}` ({values['hash']}), "
            f"{values['bits']} bits {values['paradigm']}")


# --------------------------------------------------------------------------- the table


def write_statements(path: str | os.PathLike, statements: Sequence[Statement], name: str) -> None:
    import pandas as pd
    import pyarrow as pa

    from brcd.io import write_parquet

    frame = pd.DataFrame([asdict(s) for s in statements], columns=[f.name for f in fields(Statement)])
    table = pa.Table.from_pandas(frame, preserve_index=False)
    write_parquet(path, table, {"name": name, "kind": "findings", "format": FORMAT})


def read_statements(path: str | os.PathLike) -> tuple[str, list[Statement]]:
    """(grid name, statements) of a findings table; a file that is not one is a named error."""
    from brcd.io import read_parquet

    table, metadata = read_parquet(path, "findings table", regenerate_hint(path),
                                   columns=[f.name for f in fields(Statement)])
    if metadata.get("kind") != "findings":
        raise DataError(f"{path} is not a findings table (reports/{{name}}.findings.parquet); {regenerate_hint(path)}")
    rows = table.to_pylist()
    unknown = sorted({row["kind"] for row in rows} - set(KINDS))
    if unknown:
        raise DataError(f"{path}: unknown statement kinds {unknown}; {regenerate_hint(path)}")
    return str(metadata.get("name")), [Statement(**{f.name: row[f.name] for f in fields(Statement)}) for row in rows]
