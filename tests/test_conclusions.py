"""brcd.report.conclusions: two runs' findings compared statement by statement (known truth)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from brcd.cli import main
from brcd.errors import DataError
from brcd.report.conclusions import compare_conclusions, render_agreement, seed_movement
from brcd.report.statements import VS_BEST, VS_BRCD, VS_NO_KD, Statement, read_statements, write_statements
from brcd.report.tidy import read_tidy_table

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


def test_a_threshold_effect_is_told_apart_from_a_disagreement():
    """A verdict that changes while each Δ lies inside the other run's interval is a threshold effect;
    a reversal or a Δ outside the other interval is a disagreement about the difference."""
    a = run_a()
    # brcd: +0.040 [+0.010, +0.070] -> +0.035 [-0.005, +0.075]: verdict changes, estimates inside each other
    threshold = [replace(s, delta=0.035, low=-0.005, high=0.075, verdict="level")
                 if (s.kind, s.method) == (VS_NO_KD, "brcd") else s for s in a]
    (column,) = compare_conclusions(a, threshold)
    assert [b.method for _, b in column.changed] == ["brcd"] and not column.reversed and not column.outside
    text = render_agreement([column], "A", "B")
    assert "Δ vs no KD: **0 of 3 reversed**, each run's Δ inside the other run's interval in **3 of 3** " \
           "(1 of the 1 whose verdict changed)" in text
    assert "BRCD's components vs full `brcd`: **0 of 1 reversed**" in text
    assert "— **" not in text  # no changed statement is flagged
    # kd: +0.030 [+0.020, +0.040] -> -0.030 [-0.040, -0.020]: reversed, and outside
    flipped = [replace(s, delta=-0.03, low=-0.04, high=-0.02, verdict="worse")
               if (s.kind, s.method) == (VS_NO_KD, "kd") else s for s in a]
    (column,) = compare_conclusions(a, flipped)
    assert [b.method for _, b in column.reversed] == ["kd"] and [b.method for _, b in column.outside] == ["kd"]
    text = render_agreement([column], "A", "B")
    assert "**1 of 3 reversed**" in text and "in **2 of 3**" in text and "better (+0.030" in text
    assert text.count("— **reversed**") == 1
    # rkd moves out of A's interval with the same verdict: outside, not changed, not reversed
    moved = [replace(s, delta=-0.10, low=-0.12, high=-0.08) if (s.kind, s.method) == (VS_NO_KD, "rkd") else s
             for s in a]
    (column,) = compare_conclusions(a, moved)
    assert not column.changed and not column.reversed and [b.method for _, b in column.outside] == ["rkd"]
    assert column.agree  # the criterion is about verdicts; the interval check is reported beside it


def _compared_by_the_cli(tmp_path, a: str, b: str, label_a: str, label_b: str, *options: str) -> str:
    """`brcd compare-conclusions` of two committed reports (findings and tidy tables: ``{stem}.findings.parquet``,
    ``{stem}.parquet`` under reference/), as the documented command writes it."""
    from tests.conftest import REFERENCE as reports

    out = tmp_path / "comparison.md"
    assert main(["compare-conclusions", str(reports / f"{a}.findings.parquet"), str(reports / f"{b}.findings.parquet"),
                 "--tables", str(reports / f"{a}.parquet"), str(reports / f"{b}.parquet"),
                 "--label-a", label_a, "--label-b", label_b, "--out", str(out), *options]) == 0
    return out.read_text()


def test_the_committed_two_path_comparison_is_generated_from_the_committed_tables(tmp_path):
    """reference/demo-machines.md is `brcd compare-conclusions` of the two committed findings tables
    (docs/reproducibility.md, "Same conclusions on another machine"), never edited by hand. The tables
    are copies in reference/demo-two-paths/ (A: the demo report of that day, B: its ATEN default-kernel
    run), so that a new reference demo does not change what the comparison was made from; reference/ is
    a folder no run writes, so a user's `make demo` cannot fail this test (issue 28)."""
    from tests.conftest import REFERENCE as reports
    text = _compared_by_the_cli(tmp_path, "demo-two-paths/avx2", "demo-two-paths/aten-default",
                                "AVX2 kernels (make demo)", "DEFAULT kernels (ATEN_CPU_CAPABILITY=default make demo)")
    assert (reports / "demo-machines.md").read_text() == text


@pytest.mark.parametrize("comparison, a, b, label_a, label_b, options", [
    # the first study (Fashion-MNIST, Lite0, 3 seeds; kept in reference/study-first/) against the
    # cross-dataset study, on the columns both have (issue 29)
    ("study-vs-first.md", "study-first/study", "study", "first study (2026-12-02)", "cross-dataset study",
     ["--shared-columns"]),
    # the same against the first study's grid rerun on today's code, which tells the code's changes
    # (first-vs-today.md) from the two configs' differences (study-vs-first-today.md)
    ("study-first/first-vs-today.md", "study-first/study", "study-first/today/study", "first study (2026-12-02)",
     "its grid on today's code (2026-12-07)", []),
    ("study-vs-first-today.md", "study-first/today/study", "study",
     "first study's grid on today's code (2026-12-07)", "cross-dataset study", ["--shared-columns"]),
    # the study against itself with its students' products on oneDNN's kernels (issue 25)
    ("study-onednn/blas-vs-onednn.md", "study", "study-onednn/study", "cross-dataset study (blas)",
     "its students on oneDNN's kernels", [])])
def test_the_committed_study_comparisons_are_generated_from_the_committed_tables(
        tmp_path, comparison, a, b, label_a, label_b, options):
    """The committed study comparisons are `brcd compare-conclusions` of the committed tables, never
    edited by hand."""
    from tests.conftest import REFERENCE as reports
    text = _compared_by_the_cli(tmp_path, a, b, label_a, label_b, *options)
    assert (reports / comparison).read_text() == text


def _run(kd, seed, map_at_k, bits=16, variant="selected", lam=1.0, selected=True, in_tables=True, val_map=None):
    """One row of a tidy table (the columns brcd.report.tidy.read_tidy_table reads)."""
    return {**COLUMN, "bits": bits, "kd": kd, "variant": variant, "seed": seed, "lambda": lam, "is_selected": selected,
            "in_tables": in_tables, "map_at_k": map_at_k, "train_val_map": map_at_k if val_map is None else val_map}


def _tidy(deltas, seeds=(0, 1), bits=16):
    """A tidy table of one column: the no-KD student at 0.5 every seed, `kd` at 0.5 + deltas[seed]; seed 0's
    `kd` runs are λ candidates 1 (chosen) and 2 (0.9, outside the tables)."""
    import pyarrow as pa

    variants = {seeds[0]: "lambda1"}
    rows = [_run(kd, seed, 0.5 + d, bits, variants.get(seed, "selected"))
            for seed, delta in zip(seeds, deltas) for kd, d in (("none", 0.0), ("kd", delta))]
    rows.append(_run("kd", seeds[0], 0.9, bits, "lambda2", 2.0, selected=False, in_tables=False))
    return pa.Table.from_pylist(rows)


def test_seed_movement_against_seed_spread_known_truth():
    same = seed_movement(_tidy([0.01, 0.03]), _tidy([0.01, 0.03]))
    assert (same.statements, same.seeds, same.move_rms, same.ratio) == (1, 2, 0.0, 0.0)
    # B = A + [+0.01, -0.01]: moves of rms 0.01; seed sd 0.01414 in A, 0 in B, pooled sqrt(0.0002 / 2) = 0.01
    moved = seed_movement(_tidy([0.01, 0.03]), _tidy([0.02, 0.02]))
    assert moved.move_rms == pytest.approx(0.01) and moved.seed_sd == pytest.approx(0.01)
    assert moved.ratio == pytest.approx(1.0)
    assert "**1.00× its seed standard deviation**" in moved.text()  # rows outside the tables are left out
    one = seed_movement(_tidy([0.01], seeds=(0,)), _tidy([0.03], seeds=(0,)))
    assert one.ratio is None and one.move_rms == pytest.approx(0.02) and "with one seed" in one.text()
    with pytest.raises(DataError, match="do not hold the same runs"):
        seed_movement(_tidy([0.01, 0.03]), _tidy([0.01, 0.03], bits=64))


def test_a_reversed_verdict_lists_both_runs_lambda_candidates():
    """Each reversed verdict comes with the tuning seed's λ candidates of both runs against the reference's run:
    A's `kd` below no KD at every λ, B's above at the λ it chose."""
    import pyarrow as pa

    a_runs = [_run("none", 0, 0.60, variant="lambda0", lam=0.0), _run("kd", 0, 0.52, variant="lambda0.1", lam=0.1,
              selected=False, in_tables=False), _run("kd", 0, 0.55, variant="lambda1")]
    b_runs = [_run("none", 0, 0.61, variant="lambda0", lam=0.0), _run("kd", 0, 0.64, variant="lambda0.1", lam=0.1),
              _run("kd", 0, 0.40, variant="lambda1", selected=False, in_tables=False)]
    tables = (pa.Table.from_pylist(a_runs), pa.Table.from_pylist(b_runs))
    flipped = [replace(s, delta=-0.03, low=-0.04, high=-0.02, verdict="worse")
               if (s.kind, s.method) == (VS_NO_KD, "kd") else s for s in run_a()]
    text = render_agreement(compare_conclusions(flipped, run_a()), "A", "B", tables=tables)
    assert ("- fashion_mnist, `lite2` → `lite0` (cibhash), 16 bits sym: `kd` vs `none`: A: seed 0: λ 0.1 → 0.520, "
            "**1 → 0.550**; `none` 0.600; B: seed 0: λ **0.1 → 0.640**, 1 → 0.400; `none` 0.610") in text
    assert text.count("The λ candidates behind each reversed verdict") == 1
    assert "The λ candidates" not in render_agreement(compare_conclusions(run_a(), run_a()), "A", "B", tables=tables)


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
    from brcd.io import write_parquet

    tables = {name: tmp_path / f"{name}.parquet" for name in ("ta", "tb", "tother")}
    write_parquet(tables["ta"], _tidy([0.01, 0.03]), {"name": "demo"})
    write_parquet(tables["tb"], _tidy([0.02, 0.02]), {"name": "demo"})
    write_parquet(tables["tother"], _tidy([0.02, 0.02]), {"name": "study"})
    assert main(["compare-conclusions", str(a), str(a), "--tables", str(tables["ta"]), str(tables["tb"])]) == 0
    assert "**1.00× its seed standard deviation**" in capsys.readouterr().out
    assert main(["compare-conclusions", str(a), str(a), "--tables", str(tables["ta"]), str(tables["ta"])]) == 0
    assert "**0.00× its seed standard deviation**" in capsys.readouterr().out  # a run and itself
    assert main(["compare-conclusions", str(a), str(a), "--tables", str(tables["ta"]), str(tables["tother"])]) == 2
    assert "tother.parquet (grid `study`) not of grid `demo`" in capsys.readouterr().err


def test_a_file_that_is_not_a_findings_table_is_named(tmp_path):
    import pyarrow as pa

    from brcd.io import write_parquet

    path = tmp_path / "demo.parquet"
    write_parquet(path, pa.table({"x": [1]}), {"name": "demo"})
    with pytest.raises(DataError, match="findings table .*demo.parquet"):
        read_statements(path)


def _corrected(statements, level=()):
    """``statements`` as a table since issue 29 holds them: family fields, and the verdicts of ``level``
    (kind, method) made "level" / "tied" as Holm's correction can make them (the intervals unchanged)."""
    families = {VS_NO_KD: "A", VS_BRCD: "B", VS_BEST: "C"}
    out = []
    for s in statements:
        verdict = s.verdict
        if (s.kind, s.method) in level:
            verdict = "tied" if s.kind == VS_BEST else "level"
        p = None if s.verdict == "best" else 0.01
        out.append(replace(s, verdict=verdict, family=families[s.kind], family_size=3, p_value=p,
                           p_adjusted=None if p is None else (0.2 if (s.kind, s.method) in level else 0.03)))
    return out


def test_an_old_table_is_compared_on_uncorrected_verdicts():
    """A findings table from before Holm's correction (the committed demo's, format 1) against one with
    corrected verdicts: both are compared on each interval's own verdict, so a verdict the correction
    changed is no disagreement; two corrected tables are compared on the corrected verdicts."""
    from tests.conftest import REFERENCE

    _, old = read_statements(REFERENCE / "demo-two-paths" / "avx2.findings.parquet")
    assert not any(s.corrected or s.p_value is not None for s in old)  # read without the new columns
    better = next(s for s in old if s.kind == VS_NO_KD and s.verdict == "better")
    new = _corrected(old, level={(VS_NO_KD, better.method)})
    agreement = compare_conclusions(old, new)
    assert all(c.agree and not c.changed for c in agreement) and {c.corrected for c in agreement} == {1}
    text = render_agreement(agreement, "old", "new")
    assert "each 95% interval's own, uncorrected for the number of verdicts (one table predates Holm's " in text
    both = compare_conclusions(_corrected(old), new)
    assert {c.corrected for c in both} == {2}
    changed = [(a.method, a.verdict, b.verdict) for c in both for a, b in c.changed]
    assert (better.method, "better", "level") in changed
    text = render_agreement(both, "A", "B")
    assert "Verdicts compared: Holm-corrected within each column's family (both tables have them)." in text
    assert f"`{better.method}` vs `none`: better (" in text and ", adj. p 0.03) → level (" in text


def test_corrected_table_round_trip(tmp_path):
    path = tmp_path / "new.findings.parquet"
    statements = _corrected(run_a(), level={(VS_NO_KD, "kd")})
    write_statements(path, statements, "demo")
    assert read_statements(path) == ("demo", statements)


def test_overlapping_grids_compare_on_their_shared_columns(tmp_path, capsys):
    """A grid grown to more columns (the cross-dataset study against the committed one) is compared on
    the columns both have with --shared-columns; without it that is an error naming the option."""
    a, b = tmp_path / "a.findings.parquet", tmp_path / "b.findings.parquet"
    write_statements(a, run_a(), "study")
    write_statements(b, _corrected(run_a() + run_a(bits=64) + run_a(student="lite1")), "study")
    assert main(["compare-conclusions", str(a), str(b)]) == 2
    assert "--shared-columns compares the columns both have" in capsys.readouterr().err
    assert main(["compare-conclusions", str(a), str(b), "--shared-columns", "--check"]) == 0
    out = capsys.readouterr().out
    assert "**Yes: 1 of 1 columns agree**" in out
    assert "Compared on the 1 columns both tables have; left out: 0 of " in out and " 2 of " in out
    assert "64 bits sym" in out and "`lite2` → `lite1`" in out
    with pytest.raises(DataError, match="no column in common"):
        compare_conclusions(run_a(), run_a(bits=64), shared_only=True)
