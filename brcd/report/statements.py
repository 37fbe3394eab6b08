"""A report's findings as data: one :class:`Statement` per finding, and their table.

The findings of a report (:func:`brcd.report.findings.findings_section`) are statements
read off paired 95% intervals of Δ mAP@K, judged after Holm's correction within their
family (:mod:`brcd.report.significance`). The report also writes them, one row per
statement, to ``reports/{name}.findings.parquet`` (:data:`brcd.layout.REPORT_FINDINGS`):

- ``vs_no_kd`` (family A): a KD method against the student without KD: ``better``,
  ``worse`` or ``level`` (not significant after correction);
- ``vs_best`` (family C): every student against the best of its column: ``best``, ``tied``
  (not significantly worse after correction: the bold of the tables) or ``below``;
- ``vs_brcd`` (family B): each BRCD ablation against full ``brcd``: ``better``, ``worse``, ``level``.

Each row carries its family, the family's size, the raw p-value of the test its interval
makes and the Holm-adjusted one. Tables written before issue 29 (format 1) have none of
these and uncorrected verdicts; they are read with the four fields None
(:func:`uncorrected` gives any statement its uncorrected verdict, for comparing the two).

The report writes this table and ``brcd compare-conclusions`` (:mod:`brcd.report.conclusions`)
reads two of them, so it lives below both and needs none of the grid's results.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Mapping, Sequence

from brcd.errors import DataError

VS_NO_KD = "vs_no_kd"
VS_BEST = "vs_best"
VS_BRCD = "vs_brcd"
KINDS = (VS_NO_KD, VS_BEST, VS_BRCD)
#: what identifies a column of the report's tables
COLUMN_KEYS = ("dataset", "hash", "teacher", "student", "bits", "paradigm")
#: file-format version of the findings table (2: family, family size, raw and adjusted p-values)
FORMAT = 2
#: the fields a format-1 table lacks
CORRECTION_FIELDS = ("family", "family_size", "p_value", "p_adjusted")


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
    family: str | None = None  # brcd.report.significance.FAMILIES; None: a table from before Holm's correction
    family_size: int | None = None
    p_value: float | None = None  # the test the 95% interval makes (None for the best itself)
    p_adjusted: float | None = None  # Holm-adjusted within the family of the column: decides the verdict

    @property
    def corrected(self) -> bool:
        """Whether the verdict is Holm-corrected (a table written since issue 29)."""
        return self.family is not None

    @property
    def column(self) -> tuple:
        return tuple(getattr(self, key) for key in COLUMN_KEYS)

    @property
    def significant(self) -> bool:  # as brcd.stats.Comparison's: format.interval_text reads it
        from brcd.stats import excludes_zero

        return excludes_zero(self.low, self.high)

    @classmethod
    def compared(cls, column: Mapping, kind: str, method: str, reference: str, mean: float, t) -> "Statement":
        """From a :class:`brcd.report.significance.Tested` ``t`` of ``method`` − ``reference``."""
        return cls(**column, kind=kind, method=method, reference=reference, mean=mean,
                   delta=float(t.delta), low=float(t.low), high=float(t.high),
                   verdict=verdict_word(kind, t.delta, t.significant), family=t.family,
                   family_size=int(t.family_size), p_value=float(t.p_value), p_adjusted=float(t.p_adjusted))

    @classmethod
    def best(cls, column: Mapping, method: str, mean: float, family: str, family_size: int) -> "Statement":
        return cls(**column, kind=VS_BEST, method=method, reference=method, mean=mean,
                   delta=0.0, low=0.0, high=0.0, verdict="best", family=family, family_size=family_size)


def verdict_word(kind: str, delta: float, significant: bool) -> str:
    """The verdict of a difference: ``tied``/``below`` against the best (delta <= 0 there), else
    ``better``/``worse``/``level``."""
    if kind == VS_BEST:
        return "below" if significant else "tied"
    return "level" if not significant else "better" if delta > 0 else "worse"


def uncorrected(s: Statement) -> Statement:
    """``s`` as a table from before issue 29 holds it: the verdict of its own 95% interval alone (no
    correction for its family) and no correction fields, for comparing it with such a table."""
    verdict = s.verdict if s.verdict == "best" else verdict_word(s.kind, s.delta, s.significant)
    return replace(s, verdict=verdict, **dict.fromkeys(CORRECTION_FIELDS))


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

    names = [f.name for f in fields(Statement)]
    table, metadata = read_parquet(path, "findings table", regenerate_hint(path),
                                   columns=[name for name in names if name not in CORRECTION_FIELDS])
    if metadata.get("kind") != "findings":
        raise DataError(f"{path} is not a findings table (reports/{{name}}.findings.parquet); {regenerate_hint(path)}")
    rows = table.to_pylist()
    unknown = sorted({row["kind"] for row in rows} - set(KINDS))
    if unknown:
        raise DataError(f"{path}: unknown statement kinds {unknown}; {regenerate_hint(path)}")
    present = [name for name in names if name in table.column_names]  # format 1: no correction fields
    return str(metadata.get("name")), [Statement(**{name: _value(row[name]) for name in present}) for row in rows]


def _value(value):
    """A cell as the dataclass holds it: a missing p-value (NaN in pandas' hands, null here) is None."""
    return None if isinstance(value, float) and math.isnan(value) else value
