"""brcd.conclusions: two runs' findings compared statement by statement (known truth)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from brcd.cli import main
from brcd.conclusions import (VS_BEST, VS_BRCD, VS_NO_KD, Statement, compare_conclusions, read_statements,
                              render_agreement, write_statements)
from brcd.errors import DataError

COLUMN = {"dataset": "fashion_mnist", "hash": "cibhash", "teacher": "lite2", "student": "lite0", "bits": 16,
          "paradigm": "sym"}


def _vs_none(method, delta, low, high, verdict, **column):
    return Statement(**{**COLUMN, **column}, kind=VS_NO_KD, method=method, reference="none", mean=0.6 + delta,
                     delta=delta, low=low, high=high, verdict=verdict)


def _rank(method, verdict, **column):
    return Statement(**{**COLUMN, **column}, kind=VS_BEST, method=method, reference="brcd", mean=0.6,
                     delta=-0.01, low=-0.02, high=0.01, verdict=verdict)


def run_a(**column):
    return [
        _vs_none("kd", 0.03, 0.02, 0.04, "better", **column),
        _vs_none("rkd", -0.05, -0.07, -0.03, "worse", **column),
        _vs_none("brcd", 0.04, 0.01, 0.07, "better", **column),
        _rank("brcd", "best", **column), _rank("kd", "tied", **column), _rank("rkd", "below", **column),
        _rank("none", "below", **column),
        Statement(**{**COLUMN, **column}, kind=VS_BRCD, method="brcd_nomask", reference="brcd", mean=0.64,
                  delta=0.0, low=-0.01, high=0.01, verdict="level"),
    ]


def _flip(statements, kind, method, verdict):
    return [replace(s, verdict=verdict) if (s.kind, s.method) == (kind, method) else s for s in statements]


def test_same_statements_agree():
    agreement = compare_conclusions(run_a(), run_a())
    assert [c.agree for c in agreement] == [True] and not agreement[0].changed


def test_a_method_no_longer_better_than_no_kd_is_a_disagreement():
    b = _flip(run_a(), VS_NO_KD, "brcd", "level")
    (column,) = compare_conclusions(run_a(), b)
    assert not column.same_better and not column.agree
    assert column.better == (frozenset({"kd", "brcd"}), frozenset({"kd"}))
    assert [(a.verdict, b.verdict) for a, b in column.changed] == [("better", "level")]
    text = render_agreement([column], "A", "B")
    assert "**No: 0 of 1 columns agree**" in text and "`brcd` vs `none`: better (+0.040" in text


def test_tied_groups_must_overlap_not_match():
    shifted = _flip(_flip(run_a(), VS_BEST, "brcd", "tied"), VS_BEST, "kd", "best")  # best moved, group same
    assert compare_conclusions(run_a(), shifted)[0].agree
    smaller = _flip(run_a(), VS_BEST, "kd", "below")  # {brcd} overlaps {brcd, kd}
    assert compare_conclusions(run_a(), smaller)[0].agree
    disjoint = _flip(_flip(_flip(run_a(), VS_BEST, "brcd", "below"), VS_BEST, "kd", "below"), VS_BEST, "rkd", "best")
    (column,) = compare_conclusions(run_a(), disjoint)
    assert column.same_better and not column.tied_overlap and not column.agree


def test_other_changed_verdicts_are_listed_but_do_not_decide():
    b = _flip(_flip(run_a(), VS_NO_KD, "rkd", "level"), VS_BRCD, "brcd_nomask", "worse")
    (column,) = compare_conclusions(run_a(), b)
    assert column.agree and len(column.changed) == 2


def test_tables_of_different_grids_are_an_error():
    with pytest.raises(DataError, match="not of the same grid: columns in only one.*64 bits sym"):
        compare_conclusions(run_a(), run_a() + run_a(bits=64))
    with pytest.raises(DataError, match="statements in only one findings table"):
        compare_conclusions(run_a(), run_a()[:-1])


def test_cli_round_trip_and_check(tmp_path, capsys):
    a, b, other = tmp_path / "a.findings.parquet", tmp_path / "b.findings.parquet", tmp_path / "o.findings.parquet"
    write_statements(a, run_a(), "demo")
    write_statements(b, _flip(run_a(), VS_NO_KD, "kd", "level"), "demo")
    write_statements(other, run_a(), "study")
    assert read_statements(a) == ("demo", run_a())
    assert main(["compare-conclusions", str(a), str(a), "--check"]) == 0
    assert main(["compare-conclusions", str(a), str(b)]) == 0  # without --check: report only
    assert "**No: 0 of 1 columns agree**" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["compare-conclusions", str(a), str(b), "--check", "--out", str(tmp_path / "same.md"),
              "--label-a", "EPYC", "--label-b", "Xeon"])
    assert exit_.value.code == 1
    assert "# Same conclusions? EPYC vs Xeon" in (tmp_path / "same.md").read_text()
    assert main(["compare-conclusions", str(a), str(other)]) == 2  # DataError: printed, status 2 (not 1: disagree)
    assert "of grid `demo`" in capsys.readouterr().err


def test_a_file_that_is_not_a_findings_table_is_named(tmp_path):
    import pyarrow as pa

    from brcd.io import write_parquet

    path = tmp_path / "demo.parquet"
    write_parquet(path, pa.table({"x": [1]}), {"name": "demo"})
    with pytest.raises(DataError, match="findings table .*demo.parquet"):
        read_statements(path)
