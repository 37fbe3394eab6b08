"""``brcd report``: the Markdown report of one grid (SPEC §7), with its uncertainty.

Reads the metrics file of every cell of the config's grid
(:func:`brcd.workflow.metrics_targets`), the per-query values beside each
(``metrics/{paradigm}.queries.parquet``) and the timing files
(:func:`brcd.workflow.timing_targets`), and writes ``reports/{name}.md`` with
its figures as PNG files in ``reports/{name}/`` (linked by relative paths)
the tidy table it is rendered from, ``reports/{name}.parquet`` (one row
per cell × paradigm × seed: every parameter, metric, training record and
config hash), and its findings as data, ``reports/{name}.findings.parquet``
(one row per statement: :mod:`brcd.conclusions`).

Statistics come from :mod:`brcd.stats`. Per dataset and (hash, teacher,
student) pairing:

- main table, laid out like the paper: rows teacher, student without KD, each
  KD method of the config (ablations excluded); columns bits x paradigm;
  cells mAP@K as mean ± half-width of the 95% Student-t interval over seeds;
  bold: the best student of a column and every student not significantly
  worse than it (paired interval over seeds and queries); † marks a cell
  with a seed that hit its epoch cap while still improving;
- Δ vs the student without KD, per KD method and column, with its 95%
  interval and P(method > no KD);
- ablation table: ``brcd`` and its ``brcd_*`` variants, same layout, and
  each variant's Δ vs full ``brcd``;
- alignment with the teacher: ISD (lower = closer) and NRA@K (higher = closer);
- tie-aware mAP and precision@k (means over seeds), one table per paradigm;
- encoder timing: batch-1 latency, throughput, speed-up of the student;
- figures: precision-recall over Hamming radius, mAP vs bits, encoder
  latency vs mAP.

Then the average rank of every student method over all columns with the
Nemenyi critical difference (and its figure), the search latency per bits
and, collapsed, every cell's config hash. The header says what the seeds
vary, what the intervals cover (with one seed: query sampling only) and how
many runs did not converge.

The output is a function of the input files only (no dates, sorted keys,
seeded bootstraps), so the same results give the same bytes. Files are
written atomically.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from brcd.cells import TIMING_ENCODER, TIMING_SEARCH, Cell
from brcd.evaluate import per_query_path
from brcd.errors import DataError, MetadataMismatchError
from brcd.tuning import METHOD_KEYS, NO_KD
from brcd.workflow import STUDENT_TRAINING_RULES, evaluate_rule

if TYPE_CHECKING:
    import numpy as np

    from brcd.conclusions import Statement
    from brcd.stats import Summary

log = logging.getLogger(__name__)

#: kd methods whose names start with this are BRCD ablations (own table)
ABLATION_PREFIX = "brcd_"
#: the paradigm of the teacher's own metrics file
TEACHER_PARADIGM = "teacher"
#: decimals of mAP, precision, ISD and NRA in the tables
DIGITS = 3
#: at most this many missing files are listed in the error message
MISSING_LISTED = 10
MISSING = "—"

#: what each BRCD ablation leaves out (SPEC §4), for the note under the ablation table
ABLATION_NOTES = {
    "brcd_nocluster": "no cluster terms (α_k = α always, no false-negative removal)",
    "brcd_nomask": "no bit mask (m = 1)",
    "brcd_plain": "neither clusters nor bit mask",
}

PARADIGM_LEGEND = {
    "sym": "student codes for queries and database",
    "asym": "student query codes against the teacher's database codes",
}


# --------------------------------------------------------------------------- the grid's results


@dataclass(frozen=True)
class Pairing:
    """One teacher -> student pairing under one hashing objective: a set of tables."""

    hash: str
    teacher: str
    student: str

    @property
    def label(self) -> str:
        return f"`{self.teacher}` → `{self.student}` ({self.hash})"

    @property
    def slug(self) -> str:
        return f"{self.hash}_{self.teacher}_{self.student}"


@dataclass(frozen=True)
class Method:
    """A table row: the teacher (``kd is None``) or a student trained with ``kd``."""

    label: str
    kd: str | None

    @property
    def is_teacher(self) -> bool:
        return self.kd is None


@dataclass
class GridResults:
    """Every input file of the report, loaded and checked against the grid."""

    config: Mapping
    metrics: dict[tuple[Cell, str], dict]  # (cell, paradigm) -> metrics JSON (+ "_source")
    encoder: dict[tuple[str, str], dict]  # (dataset, backbone) -> encoder timing JSON
    search: dict[int, dict]  # bits -> search timing JSON
    per_query: dict[tuple[Cell, str], "np.ndarray"] = field(default_factory=dict)  # (cell, paradigm) -> AP@K per query
    selections: dict[tuple, dict] = field(default_factory=dict)  # method_key(cell) -> its selection.json
    # rule -> (expected jobs, benchmark rows of the jobs that have one): Snakemake's benchmark files
    benchmarks: dict[str, tuple[int, list["BenchmarkRow"]]] = field(default_factory=dict)
    # kd -> (its student-training jobs, benchmark rows of those that have one): workflow.student_training_files
    training_cost: dict[str, tuple[int, list["BenchmarkRow"]]] = field(default_factory=dict)

    # ---- grid axes

    def pairings(self) -> list[Pairing]:
        c = self.config
        return [Pairing(h, t, s) for h in c["hash"] for t in c["teachers"] for s in c["students"]]

    def topk(self, dataset: str) -> int:
        return int(self.config["datasets"][dataset]["topk"])

    def kd_methods(self) -> list[str]:
        """KD methods of the main table: config order, without the baseline and the ablations."""
        return [kd for kd in self.config["kd"] if kd != NO_KD and not kd.startswith(ABLATION_PREFIX)]

    def ablations(self) -> list[str]:
        """``brcd`` (when in the grid) and its ``brcd_*`` variants; empty without variants."""
        variants = [kd for kd in self.config["kd"] if kd.startswith(ABLATION_PREFIX)]
        if not variants:
            return []
        return (["brcd"] if "brcd" in self.config["kd"] else []) + variants

    # ---- values

    def runs(self, dataset: str, pairing: Pairing, method: Method, bits: int, paradigm: str) -> list[dict]:
        """The metrics files of one table cell, one per seed."""
        out = []
        for seed in self.config["seeds"]:
            if method.is_teacher:
                out.append(self.metrics[(Cell(dataset, bits, pairing.hash, pairing.teacher, seed), TEACHER_PARADIGM)])
            else:
                cell = Cell(dataset, bits, pairing.hash, pairing.teacher, seed, pairing.student, method.kd)
                out.append(self.metrics[(replace(cell, variant=self.variant(cell, paradigm)), paradigm)])
        return out

    def variant(self, cell: Cell, paradigm: str) -> str:
        """The run a table shows for a student method and seed: the candidate whose λ was selected for
        this paradigm (tuning seed), else the run of the selected λ."""
        from brcd.tuning import SELECTED, tuning_seed, variant_of

        if cell.seed != tuning_seed(self.config):
            return SELECTED
        return variant_of(self.selected_lambda(cell, paradigm))

    def selected_lambda(self, cell: Cell, paradigm: str) -> float:
        return float(self.selections[method_key(cell)]["paradigms"][paradigm]["lambda"])

    def candidates(self, dataset: str, pairing: Pairing, kd: str, bits: int, paradigm: str) -> list[tuple[float, dict]]:
        """(λ, metrics file) of every λ candidate of a method (tuning seed), in grid order."""
        from brcd.tuning import lambda_grid, tuning_seed, variant_of

        cell = Cell(dataset, bits, pairing.hash, pairing.teacher, tuning_seed(self.config), pairing.student, kd)
        return [(lam, self.metrics[(replace(cell, variant=variant_of(lam)), paradigm)])
                for lam in lambda_grid(self.config, kd)]

    def values(self, dataset: str, pairing: Pairing, method: Method, bits: int, paradigm: str,
               key: str) -> list[float | None]:
        return [metric_value(run, key) for run in self.runs(dataset, pairing, method, bits, paradigm)]

    def samples(self, dataset: str, pairing: Pairing, method: Method, bits: int, paradigm: str,
                key: str) -> "np.ndarray | None":
        """Seeds x units array for :mod:`brcd.stats`: per-query AP@K for ``map@K`` (units = queries,
        the same queries in every cell of a dataset), else one value per seed (units = 1);
        None when a value is missing."""
        import numpy as np

        runs = self.runs(dataset, pairing, method, bits, paradigm)
        if key == "map@K" and self.per_query:
            return np.stack([self.per_query[_run_key(run)] for run in runs])
        values = [metric_value(run, key) for run in runs]
        if any(v is None or math.isnan(v) for v in values):
            return None
        return np.asarray(values, dtype=float)[:, None]

    def unconverged(self, dataset: str, pairing: Pairing, method: Method, bits: int, paradigm: str) -> int:
        """How many seeds of a table cell hit the epoch cap while still improving."""
        return sum(not converged(run) for run in self.runs(dataset, pairing, method, bits, paradigm))


def converged(record: Mapping) -> bool:
    """A run's ``training.converged`` (files without a training record count as converged)."""
    training = record.get("training") or {}
    return bool(training.get("converged", True))


def _run_key(record: Mapping) -> tuple[Cell, str]:
    return record["_key"]


def metric_value(record: Mapping, key: str) -> float | None:
    """``key`` of a metrics file's ``metrics``: ``@K`` stands for its topk, ``/`` reaches into a nested entry.

    E.g. ``map@K``, ``map@K_tie_aware``, ``nra@K``, ``isd``, ``precision@k/10``.
    """
    name = key.replace("@K", f"@{record['topk']}")
    value = record["metrics"]
    for part in name.split("/"):
        if not isinstance(value, Mapping) or part not in value:
            raise DataError(
                f"metrics file {record['_source']} has no metric {name!r}; it was written by another version of "
                f"`brcd evaluate`: delete it and rebuild it with snakemake (rule `{evaluate_rule(record['paradigm'])}`)"
            )
        value = value[part]
    return None if value is None else float(value)


def _read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); delete it and rebuild it with snakemake") from None


def _missing_error(missing: list[tuple[str, str]], root: Path, config_path: str | None) -> DataError:
    """Name the missing files and how to build them (rule and the snakemake call)."""
    config_arg = f"--configfile {config_path}" if config_path else "--configfile CONFIG"
    listed = "\n".join(f"  {path}  (rule `{rule}`)" for path, rule in missing[:MISSING_LISTED])
    more = f"\n  ... and {len(missing) - MISSING_LISTED} more" if len(missing) > MISSING_LISTED else ""
    return DataError(
        f"{len(missing)} input file(s) of the report are missing in {root.resolve()}:\n{listed}{more}\n"
        f"Build them with `snakemake --cores N {config_arg} {missing[0][0]}` (one file) or "
        f"`snakemake --cores N {config_arg}` (the whole grid, report included), or pass --results-dir "
        "pointing at the folder that holds results/."
    )


def _read_checked(root: Path, path: str, expected: Mapping, rule: str) -> dict:
    """Read a JSON input; it must hold what its place in the layout says (a renamed or stale file would
    corrupt a table). ``_source`` records the path for later messages."""
    record = _read_json(root / path)
    for key, value in expected.items():
        if record.get(key) != value:
            raise MetadataMismatchError(
                f"{root / path} says {key} = {record.get(key)!r} but its place in the grid says {value!r}; "
                f"delete it and rebuild it with snakemake (rule `{rule}`)"
            )
    record["_source"] = path
    return record


def load_results(config: Mapping, results_dir: str | os.PathLike = ".", config_path: str | None = None) -> GridResults:
    """Read every input file of the grid; all missing files are reported at once, before any work."""
    from brcd import workflow

    root = Path(results_dir)
    cells = [(cell, TEACHER_PARADIGM) for cell in workflow.teacher_cells(config)]
    cells += [(cell, p) for cell in workflow.student_cells(config) for p in config["paradigms"]]
    metric_paths = {key: workflow.metrics_path(*key) for key in cells}
    # timing files by what their place in the layout says they hold (as workflow.timing_targets lists them)
    encoder_paths = {(dataset, backbone): TIMING_ENCODER.format(dataset=dataset, backbone=backbone)
                     for dataset in config["datasets"] for backbone in _backbones(config)}
    search_paths = {int(bits): TIMING_SEARCH.format(bits=bits) for bits in config["bits"]}
    selection_paths = {method_key(method): method.selection_path() for method in workflow.student_methods(config)}

    query_paths = {key: per_query_path(path) for key, path in metric_paths.items()}
    missing = [(path, evaluate_rule(paradigm)) for (_, paradigm), path in metric_paths.items()]
    missing += [(str(path), evaluate_rule(paradigm)) for (_, paradigm), path in query_paths.items()]
    missing += [(path, "time_encoder") for path in encoder_paths.values()]
    missing += [(path, "time_search") for path in search_paths.values()]
    missing += [(path, "select_lambda") for path in selection_paths.values()]
    missing = [(path, rule) for path, rule in missing if not (root / path).is_file()]
    if missing:
        raise _missing_error(missing, root, config_path)

    metrics = {}
    for (cell, paradigm), path in metric_paths.items():
        expected = {"student": None, "kd": None, "variant": None, **cell.parameters(), "paradigm": paradigm,
                    "topk": int(config["datasets"][cell.dataset]["topk"])}
        metrics[(cell, paradigm)] = _read_checked(root, path, expected, evaluate_rule(paradigm))
        metrics[(cell, paradigm)]["_key"] = (cell, paradigm)
        if "metrics" not in metrics[(cell, paradigm)]:
            raise DataError(f"metrics file {root / path} has no `metrics` entry; "
                            f"delete it and rebuild it with snakemake (rule `{evaluate_rule(paradigm)}`)")
    per_query = {key: _read_queries(root / query_paths[key], metrics[key]) for key in metric_paths}
    _check_same_queries(per_query, root, query_paths)
    encoder = {key: _read_checked(root, path, {"dataset": key[0], "backbone": key[1]}, "time_encoder")
               for key, path in encoder_paths.items()}
    search = {bits: _read_checked(root, path, {"bits": bits}, "time_search") for bits, path in search_paths.items()}
    selections = {key: _read_selection(root / path, key, config) for key, path in selection_paths.items()}
    files = workflow.benchmark_files(config)
    records = {path: read_benchmark(root / path) for paths in files.values() for path in paths}

    def found(paths: Sequence[str]) -> tuple[int, list[BenchmarkRow]]:
        return len(paths), [records[path] for path in paths if records[path]]

    benchmarks = {rule: found(paths) for rule, paths in files.items()}
    training_cost = {kd: found(paths) for kd, paths in workflow.student_training_files(config).items()}
    return GridResults(config, metrics, encoder, search, {key: ap for key, (_, ap) in per_query.items()}, selections,
                       benchmarks, training_cost)


@dataclass(frozen=True)
class BenchmarkRow:
    """One job's Snakemake benchmark record: wall seconds, peak memory (MB), CPU seconds, and
    when it ended (the file's modification time)."""

    seconds: float
    max_rss_mb: float | None
    cpu_seconds: float | None
    ended: float


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


def method_key(cell: Cell) -> tuple:
    return tuple(getattr(cell, key) for key in METHOD_KEYS)


def _read_selection(path: Path, key: tuple, config: Mapping) -> dict:
    from brcd.tuning import check_selection, read_selection

    record = read_selection(path, dict(zip(METHOD_KEYS, key)))
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
                f"{cell.dataset!r} (another split?); rebuild the stale one with snakemake "
                f"(rule `{evaluate_rule(paradigm)}`)"
            )


# --------------------------------------------------------------------------- numbers and cells


#: seed of every bootstrap in the report (the same results give the same bytes)
BOOTSTRAP_SEED = 0
#: marks a table cell with a seed that hit its epoch cap while still improving
UNCONVERGED = "†"


def summarize(values: Iterable[float | None]) -> "Summary | None":
    """Mean, std and 95% CI over seeds of the present values (None when there are none)."""
    from brcd.stats import summarize as over_seeds

    present = [v for v in values if v is not None and not math.isnan(v)]
    return over_seeds(present) if present else None


def compared_to_best(samples: Mapping, higher_is_better: bool = True) -> "tuple[object, dict] | None":
    """(best row, {other row: paired Comparison against the best}) of one column
    (:func:`brcd.stats.compare_to_best`; with ``higher_is_better`` False on negated values).
    None when it cannot be tested: a missing value, or one seed of a metric without
    per-query values."""
    from brcd.stats import compare_to_best

    if not samples or any(a is None for a in samples.values()):
        return None
    if all(a.shape == (1, 1) for a in samples.values()):
        return None  # one number per row: nothing to test
    sign = 1.0 if higher_is_better else -1.0
    return compare_to_best({row: sign * a for row, a in samples.items()}, seed=BOOTSTRAP_SEED)


def tied_with_best(samples: Mapping[str, "np.ndarray | None"], higher_is_better: bool = True) -> set[str]:
    """Rows of one column that are the best or not significantly worse than it (the rule of
    :func:`brcd.stats.tied_with_best`: the interval against the best reaches 0)."""
    compared = compared_to_best(samples, higher_is_better)
    if compared is None:
        return set()
    best, comparisons = compared
    return {best} | {row for row, c in comparisons.items() if c.not_worse}


def format_number(value: float | None) -> str:
    """Latencies and rates: three significant digits without exponents."""
    if value is None:
        return MISSING
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:#.3g}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """GitHub pipe table; columns from ``numeric_from`` on are right-aligned."""
    from tabulate import tabulate

    align = ["left"] * numeric_from + ["right"] * (len(headers) - numeric_from)
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=align)


# --------------------------------------------------------------------------- tables


def teacher_row(pairing: Pairing) -> Method:
    return Method(f"teacher (`{pairing.teacher}`)", None)


def student_row(pairing: Pairing, kd: str) -> Method:
    if kd == NO_KD:
        return Method(f"student, no KD (`{pairing.student}`)", kd)
    return Method(f"`{kd}`", kd)


def columns(results: GridResults) -> list[tuple[int, str]]:
    return [(bits, paradigm) for bits in results.config["bits"] for paradigm in results.config["paradigms"]]


def column_header(bits: int, paradigm: str) -> str:
    return f"{bits} bits {paradigm}"


def metric_table(results: GridResults, dataset: str, pairing: Pairing, methods: Sequence[Method], key: str,
                 higher_is_better: bool = True, contenders: Sequence[Method] | None = None) -> str:
    """Rows methods, columns bits x paradigm, cells mean ± 95% CI half-width over seeds.

    Bold: per column, the best of the ``contenders`` (default: this table's
    students) and every contender not significantly worse than it (the
    tied-with-best group), where they are rows of this table; † marks a cell
    with an unconverged seed. The main and ablation tables take every student
    of the grid as contenders, so that their bold is one group per column, the
    findings' "tied with the best".
    """
    cols = columns(results)
    contenders = [m for m in (methods if contenders is None else contenders) if not m.is_teacher]
    rows = []
    bold = [set() for _ in methods]
    for j, (bits, paradigm) in enumerate(cols):
        samples = {m.kd: results.samples(dataset, pairing, m, bits, paradigm, key) for m in contenders}
        group = tied_with_best(samples, higher_is_better)
        for i, method in enumerate(methods):
            if not method.is_teacher and method.kd in group:
                bold[i].add(j)
    for i, method in enumerate(methods):
        cells = []
        for j, (bits, paradigm) in enumerate(cols):
            summary = summarize(results.values(dataset, pairing, method, bits, paradigm, key))
            text = MISSING if summary is None else summary.text(DIGITS)
            text = f"**{text}**" if j in bold[i] else text
            if results.unconverged(dataset, pairing, method, bits, paradigm):
                text += UNCONVERGED
            cells.append(text)
        rows.append([method.label, *cells])
    return markdown_table(["method", *(column_header(b, p) for b, p in cols)], rows)


def signed(value: float, digits: int = DIGITS) -> str:
    """+0.012, -0.004, and 0.000 for anything that rounds to zero (never "-0.000")."""
    rounded = round(value, digits)
    return f"{0.0:.{digits}f}" if rounded == 0 else f"{rounded:+.{digits}f}"


def interval_digits(c, digits: int = DIGITS, most: int = 6) -> int:
    """Decimals that show a significant interval's sign: more than ``digits`` when its bound
    nearest 0 would round to 0 (a bold Δ with a bound printed as 0.000 reads as a contradiction)."""
    if not c.significant:
        return digits
    nearest = c.low if c.low > 0 else -c.high
    while digits < most and round(nearest, digits) == 0:
        digits += 1
    return digits


def interval_text(c) -> str:
    """``+0.012 [+0.004, +0.020]``: Δ and its 95% interval."""
    digits = interval_digits(c)
    return f"{signed(c.delta, digits)} [{signed(c.low, digits)}, {signed(c.high, digits)}]"


def delta_table(results: GridResults, dataset: str, pairing: Pairing, methods: Sequence[Method],
                reference: Method) -> str:
    """Δ mAP@K of each method against ``reference`` per column: paired bootstrap over seeds and
    queries (:func:`brcd.stats.compare`), its 95% interval and P(method > reference)."""
    from brcd.stats import compare

    cols = columns(results)
    rows = []
    for method in methods:
        cells = []
        for bits, paradigm in cols:
            a = results.samples(dataset, pairing, method, bits, paradigm, "map@K")
            b = results.samples(dataset, pairing, reference, bits, paradigm, "map@K")
            if a is None or b is None:
                cells.append(MISSING)
                continue
            c = compare(a, b, seed=BOOTSTRAP_SEED)
            digits = interval_digits(c)
            delta = f"**{signed(c.delta, digits)}**" if c.significant else signed(c.delta, digits)
            cells.append(f"{delta} [{signed(c.low, digits)}, {signed(c.high, digits)}] P={c.p_improvement:.2f}")
        rows.append([method.label, *cells])
    return markdown_table(["method", *(column_header(b, p) for b, p in cols)], rows)


def lambda_table(results: GridResults, dataset: str, pairing: Pairing) -> str:
    """The λ selected on validation for each distilled method and column."""
    from brcd.tuning import format_lambda

    cols = columns(results)
    rows = []
    for kd in [kd for kd in results.config["kd"] if kd != NO_KD]:
        cell = Cell(dataset, 0, pairing.hash, pairing.teacher, 0, pairing.student, kd)
        rows.append([f"`{kd}`", *(format_lambda(results.selected_lambda(replace(cell, bits=b), p)) for b, p in cols)])
    return markdown_table(["method", *(column_header(b, p) for b, p in cols)], rows)


def spread_table(results: GridResults, dataset: str, pairing: Pairing) -> str:
    """Per method and column, how much test (and validation) mAP moves over the λ grid:
    max − min over the candidates of the tuning seed. Small = robust to λ, large = fragile."""
    cols = columns(results)
    rows = []
    for kd in [kd for kd in results.config["kd"] if kd != NO_KD]:
        cells = []
        for bits, paradigm in cols:
            runs = results.candidates(dataset, pairing, kd, bits, paradigm)
            test = [metric_value(run, "map@K") for _, run in runs]
            val = [(run.get("training") or {}).get("val_map") for _, run in runs]
            val_text = f" ({max(val) - min(val):.{DIGITS}f})" if None not in val else ""
            cells.append(f"{max(test) - min(test):.{DIGITS}f}{val_text}")
        rows.append([f"`{kd}`", *cells])
    return markdown_table(["method", *(column_header(b, p) for b, p in cols)], rows)


def interval_note(results: GridResults) -> str:
    if len(results.config["seeds"]) > 1:
        return ("intervals are 95% paired bootstrap intervals over seeds and queries (`brcd.stats.compare`); "
                "P is the bootstrap probability that the method beats the reference")
    return ("one seed: intervals cover query sampling only (a bootstrap over queries), not training randomness; "
            "P is the bootstrap probability that the method beats the reference")


def main_methods(results: GridResults, pairing: Pairing) -> list[Method]:
    baseline = [student_row(pairing, NO_KD)] if NO_KD in results.config["kd"] else []
    return [teacher_row(pairing), *baseline, *(student_row(pairing, kd) for kd in results.kd_methods())]


def student_methods(results: GridResults, pairing: Pairing) -> list[Method]:
    return [student_row(pairing, kd) for kd in results.config["kd"]]


def precision_cutoffs(results: GridResults, dataset: str) -> list[str]:
    found = {k for (cell, _), record in results.metrics.items() if cell.dataset == dataset
             for k in record["metrics"].get("precision@k", {})}
    return sorted(found, key=int)


def secondary_table(results: GridResults, dataset: str, pairing: Pairing, paradigm: str) -> str:
    """Tie-aware mAP beside the conventional value, and precision@k (means over seeds)."""
    cutoffs = precision_cutoffs(results, dataset)
    keys = ["map@K", "map@K_tie_aware", "map_all", "map_all_tie_aware", *(f"precision@k/{k}" for k in cutoffs)]
    k = results.topk(dataset)
    headers = ["method", "bits", f"mAP@{k}", f"mAP@{k} tie-aware", "mAP@all", "mAP@all tie-aware",
               *(f"P@{c}" for c in cutoffs)]
    rows = []
    for bits in results.config["bits"]:
        for method in [teacher_row(pairing), *student_methods(results, pairing)]:
            row = [method.label, str(bits)]
            for key in keys:
                values = [_optional_metric(run, key)
                          for run in results.runs(dataset, pairing, method, bits, paradigm)]
                summary = summarize(values)
                row.append(MISSING if summary is None else f"{summary.mean:.{DIGITS}f}")
            rows.append(row)
    return markdown_table(headers, rows)


def _optional_metric(record: Mapping, key: str) -> float | None:
    """Precision cut-offs larger than a database are absent by design: show a dash."""
    if key.startswith("precision@k/") and key.split("/")[1] not in record["metrics"].get("precision@k", {}):
        return None
    return metric_value(record, key)


def _backbones(config: Mapping) -> list[str]:
    return list(dict.fromkeys([*config["teachers"], *config["students"]]))


def _role(config: Mapping, alias: str) -> str:
    return ", ".join(role for role, key in (("teacher", "teachers"), ("student", "students")) if alias in config[key])


def encoder_table(results: GridResults, dataset: str) -> str:
    config = results.config
    teachers = config["teachers"]
    headers = ["backbone", "role", "model", "device", "input", "threads", "latency, batch 1 (ms/image)",
               "throughput (images/s)", *(f"speed-up vs `{t}` (latency / throughput)" for t in teachers)]
    rows = []
    for alias in _backbones(config):
        timing = results.encoder[(dataset, alias)]
        speedups = [_speedup(results.encoder[(dataset, t)], timing) for t in teachers]
        rows.append([f"`{alias}`", _role(config, alias), f"`{timing.get('model', MISSING)}`", _device(timing),
                     f"{timing.get('input_size', MISSING)} px", str(timing.get("threads", MISSING)),
                     format_number(timing.get("latency_ms")), _throughput(timing), *speedups])
    return markdown_table(headers, rows, numeric_from=4)


def _device(timing: Mapping) -> str:
    device, name = str(timing.get("device", MISSING)), timing.get("device_name")
    return f"{device}: {name}" if name and name != device else device


def _throughput(timing: Mapping) -> str:
    rate = timing.get("throughput_images_per_second")
    batches = [b for b in timing.get("batches", []) if b.get("images_per_second") == rate]
    at = f" (batch {batches[0]['batch_size']})" if batches else ""
    return format_number(rate) + at


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if not numerator or not denominator:
        return MISSING
    return f"{numerator / denominator:.2f}×"


def _speedup(teacher: Mapping, other: Mapping) -> str:
    latency = _ratio(teacher.get("latency_ms"), other.get("latency_ms"))
    throughput = _ratio(other.get("throughput_images_per_second"), teacher.get("throughput_images_per_second"))
    return f"{latency} / {throughput}"


def search_method(results: GridResults) -> str:
    """The search method the timing files record (one per bit length; normally all the same)."""
    methods = sorted({str(results.search[bits].get("method", MISSING)) for bits in results.config["bits"]})
    return "; ".join(methods)


def search_table(results: GridResults) -> str:
    bits_list = results.config["bits"]
    entries = {(bits, e["database_size"], e["topk"]): e for bits in bits_list for e in results.search[bits]["results"]}
    sizes_and_k = sorted({(size, k) for _, size, k in entries})
    headers = ["database size", "K"]
    for bits in bits_list:
        headers += [f"{bits} bits: single query (ms)", f"{bits} bits: batched (ms/query)"]
    rows = []
    for size, k in sizes_and_k:
        row = [f"{size:,}", str(k)]
        for bits in bits_list:
            entry = entries.get((bits, size, k))
            row += [format_number(entry["single"]["per_query_ms_median"]) if entry else MISSING,
                    format_number(entry["batch"]["per_query_ms_median"]) if entry else MISSING]
        rows.append(row)
    return markdown_table(headers, rows, numeric_from=0)


def job_count(found: int, expected: int) -> str:
    """A job count for the time tables: "3", or "2 of 3" when some jobs have no benchmark record."""
    return str(found) if found == expected else f"{found} of {expected}"


def stage_time_table(results: GridResults) -> str:
    """Per rule: jobs, total / mean / max wall seconds, CPU seconds and peak memory of its jobs."""
    rows = []
    for rule, (expected, bench) in results.benchmarks.items():
        if not bench:
            rows.append([f"`{rule}`", job_count(0, expected), *([MISSING] * 5)])
            continue
        seconds = [b.seconds for b in bench]
        cpu = [b.cpu_seconds for b in bench if b.cpu_seconds is not None]
        rss = [b.max_rss_mb for b in bench if b.max_rss_mb is not None]
        rows.append([f"`{rule}`", job_count(len(bench), expected), format_number(sum(seconds)),
                     format_number(sum(seconds) / len(seconds)),
                     format_number(max(seconds)), format_number(sum(cpu)) if cpu else MISSING,
                     format_number(max(rss)) if rss else MISSING])
    total = [b.seconds for _, bench in results.benchmarks.values() for b in bench]
    rows.append(["all", str(len(total)), format_number(sum(total)), "", "", "", ""])
    return markdown_table(["rule", "jobs", "total (s)", "mean (s)", "max (s)", "CPU (s)", "peak memory (MB)"], rows)


def _job_intervals(results: GridResults) -> list[tuple[float, float]]:
    """(start, end) of every job with a benchmark record, by start."""
    return sorted((b.ended - b.seconds, b.ended) for _, rows in results.benchmarks.values() for b in rows)


def run_span(results: GridResults) -> float | None:
    """Seconds from the first job's start to the last job's end among the benchmark files."""
    intervals = _job_intervals(results)
    if not intervals:
        return None
    return max(end for _, end in intervals) - intervals[0][0]


def busy_time(results: GridResults) -> float | None:
    """Seconds during which at least one job ran (the union of the jobs' intervals).

    Less than :func:`run_span` by the time between separate runs of a grid
    (a run stopped and resumed later): what one uninterrupted run would have
    taken. Jobs killed by the stop left no record and were redone, so their
    lost minutes are not counted.
    """
    intervals = _job_intervals(results)
    if not intervals:
        return None
    total, (start, end) = 0.0, intervals[0]
    for lo, hi in intervals[1:]:
        if lo > end:
            total, start = total + end - start, lo
        end = max(end, hi)
    return total + end - start


#: a span longer than the busy time by more than this (seconds, or this share of the span) had idle gaps
IDLE_GAP = (120.0, 0.02)


def span_text(results: GridResults) -> str | None:
    """The run time as report text: the span of the jobs, and their busy time when it is shorter."""
    span, busy = run_span(results), busy_time(results)
    if span is None:
        return None
    text = f"**{format_duration(span)}** from the first job's start to the last job's end"
    if span - busy > max(IDLE_GAP[0], IDLE_GAP[1] * span):
        text += (f"; jobs were running during **{format_duration(busy)}** of it (the rest is time between "
                 "separate runs of the grid, e.g. a run stopped and resumed)")
    return text


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def stage_time_section(results: GridResults) -> list[str]:
    span = span_text(results)
    if span is None:
        return ["## Time per stage", "",
                "No Snakemake benchmark files (`logs/**/*.bench.tsv`) for this grid's jobs: they are written "
                "when `snakemake` runs the jobs.", ""]
    return ["## Time per stage", "",
            f"From Snakemake's benchmark files of this grid's jobs (`logs/{{rule}}/**/*.bench.tsv`): wall "
            "seconds of each job (jobs run side by side, so totals add up to more than the run took), CPU "
            f"seconds and peak memory. Before the report: {span}.", "",
            stage_time_table(results), "", *training_cost_section(results)]


def training_cost_section(results: GridResults) -> list[str]:
    """Per distillation method: the wall seconds of its student-training jobs and their share."""
    from brcd.tuning import lambda_grid

    costs = {kd: sum(b.seconds for b in rows) for kd, (_, rows) in results.training_cost.items()}
    total = sum(costs.values())
    if not total:
        return []
    rows = []
    for kd, (expected, bench) in results.training_cost.items():
        sums = ([format_number(costs[kd]), format_number(costs[kd] / len(bench)), f"{100 * costs[kd] / total:.1f}%"]
                if bench else [MISSING] * 3)
        rows.append([f"`{kd}`", str(len(lambda_grid(results.config, kd))), job_count(len(bench), expected), *sums])
    found = sum(len(bench) for _, bench in results.training_cost.values())
    expected = sum(n for n, _ in results.training_cost.values())
    rows.append(["all", "", job_count(found, expected), format_number(total), "", "100%"])
    return ["Student training per distillation method: the wall seconds of each method's "
            f"`{'` and `'.join(STUDENT_TRAINING_RULES)}` jobs (every λ candidate of the tuning seed, the "
            "selected λ of the other seeds) and their share of all student training. Every method has the "
            "same schedule; its share grows with its number of λ candidates, the cost of its loss and how "
            "long it trains before early stopping. Jobs without a benchmark record (\"k of n\") are left out "
            "of the sums.", "",
            markdown_table(["method", "λ candidates", "jobs", "total (s)", "mean (s)", "share"], rows), ""]


def config_hash_table(results: GridResults) -> str:
    """cell -> config hash; a student's paradigm files share their model's hash."""
    hashes: dict[Cell, list[str]] = {}
    for (cell, paradigm), record in results.metrics.items():
        value = str(record.get("config_hash"))
        hashes.setdefault(cell, [])
        if value not in hashes[cell]:
            hashes[cell].append(value)
    rows = [[c.dataset, str(c.bits), f"`{c.model}`", str(c.seed), ", ".join(f"`{h}`" for h in hashes[c])]
            for c in hashes]
    return markdown_table(["dataset", "bits", "model", "seed", "config hash"], rows, numeric_from=5)


# --------------------------------------------------------------------------- figures


def _figure(ncols: int, width: float = 5.0, height: float = 4.0):
    """A matplotlib figure on the Agg canvas; no pyplot, so no global state or display backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    return figure, list(axes)


def save_figure(figure, path: Path) -> None:
    """Atomic: a temporary file beside ``path`` renamed onto it."""
    from brcd.io import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None})


@dataclass(frozen=True)
class Style:
    color: str
    linestyle: str = "-"
    marker: str = "o"


def method_styles(results: GridResults) -> dict[str | None, Style]:
    """One colour per kd method, the same in every figure."""
    from matplotlib import colormaps

    palette = colormaps["tab20"].colors
    styles: dict[str | None, Style] = {None: Style("black", "--", "*"), NO_KD: Style("0.5", ":", "x")}
    others = [kd for kd in results.config["kd"] if kd != NO_KD]
    for i, kd in enumerate(others):
        styles[kd] = Style(_hex(palette[(2 * i) % 20 + (i // 10) % 2]))
    return styles


def _hex(rgb) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb[:3])


def _mean_curve(runs: Sequence[Mapping], key: str) -> list[float]:
    """Point-wise mean over seeds of one pr_curve list; radii with no defined value give NaN."""
    columns_ = list(zip(*(run["metrics"]["pr_curve"][key] for run in runs)))
    out = []
    for values in columns_:
        present = [v for v in values if v is not None]
        out.append(sum(present) / len(present) if present else math.nan)
    return out


def pr_figure(results: GridResults, dataset: str, pairing: Pairing, bits: int, path: Path) -> None:
    styles = method_styles(results)
    paradigms = results.config["paradigms"]
    figure, axes = _figure(len(paradigms))
    for ax, paradigm in zip(axes, paradigms):
        for method in [teacher_row(pairing), *student_methods(results, pairing)]:
            runs = results.runs(dataset, pairing, method, bits, paradigm)
            recall, precision = _mean_curve(runs, "recall"), _mean_curve(runs, "precision")
            points = [(r, p) for r, p in zip(recall, precision) if not (math.isnan(r) or math.isnan(p))]
            if not points:
                continue
            style = styles[method.kd]
            # a marker per radius: a collapsed model (one code for everything) is a single point
            ax.plot(*zip(*points), color=style.color, linestyle=style.linestyle, marker=style.marker, markersize=4,
                    linewidth=1.2, label="teacher" if method.is_teacher else method.kd)
        ax.set_title(f"{dataset}, {bits} bits, {paradigm}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize="small", loc="best")
    figure.suptitle(f"Precision–recall over Hamming radius ({pairing.teacher} → {pairing.student})")
    save_figure(figure, path)


def map_bits_figure(results: GridResults, dataset: str, pairing: Pairing, path: Path) -> None:
    styles = method_styles(results)
    paradigms = results.config["paradigms"]
    bits_list = sorted(results.config["bits"])
    k = results.topk(dataset)
    figure, axes = _figure(len(paradigms))
    for ax, paradigm in zip(axes, paradigms):
        for method in [teacher_row(pairing), *student_methods(results, pairing)]:
            summaries = [summarize(results.values(dataset, pairing, method, b, paradigm, "map@K")) for b in bits_list]
            points = [(b, s.mean, s.half_width or 0.0) for b, s in zip(bits_list, summaries) if s is not None]
            if not points:
                continue
            x, y, err = zip(*points)
            style = styles[method.kd]
            ax.errorbar(x, y, yerr=err, color=style.color, linestyle=style.linestyle, marker=style.marker,
                        markersize=5, capsize=3, linewidth=1.2, label="teacher" if method.is_teacher else method.kd)
        ax.set_xscale("log", base=2)
        ax.set_xticks(bits_list, [str(b) for b in bits_list])
        ax.set_title(f"{dataset}, {paradigm}")
        ax.set_xlabel("bits")
        ax.set_ylabel(f"mAP@{k}")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize="small", loc="best")
    figure.suptitle(f"mAP@{k} vs code length ({pairing.teacher} → {pairing.student}; bars: 95% CI over seeds)")
    save_figure(figure, path)


def sensitivity_figure(results: GridResults, dataset: str, pairing: Pairing, bits: int, path: Path) -> None:
    """Test (solid) and validation (dashed) mAP against λ for each method, tuning seed; the student
    without KD as a grey line; a ring marks the λ selected on validation."""
    from brcd.tuning import format_lambda

    styles = method_styles(results)
    paradigms = results.config["paradigms"]
    k = results.topk(dataset)
    figure, axes = _figure(len(paradigms), width=6.0, height=4.5)
    for ax, paradigm in zip(axes, paradigms):
        if NO_KD in results.config["kd"]:
            (_, baseline), = results.candidates(dataset, pairing, NO_KD, bits, paradigm)
            ax.axhline(metric_value(baseline, "map@K"), color=styles[NO_KD].color, linestyle=":", label="no KD")
        for kd in [kd for kd in results.config["kd"] if kd != NO_KD]:
            runs = results.candidates(dataset, pairing, kd, bits, paradigm)
            lams = [lam for lam, _ in runs]
            color = styles[kd].color
            ax.plot(lams, [metric_value(run, "map@K") for _, run in runs], color=color, marker="o", markersize=4,
                    linewidth=1.2, label=kd)
            val = [(run.get("training") or {}).get("val_map") for _, run in runs]
            if None not in val:
                ax.plot(lams, val, color=color, linestyle="--", linewidth=0.8, alpha=0.7)
            chosen = results.selected_lambda(Cell(dataset, bits, pairing.hash, pairing.teacher, 0, pairing.student,
                                                  kd), paradigm)
            test = {lam: metric_value(run, "map@K") for lam, run in runs}
            ax.plot([chosen], [test[chosen]], marker="o", markersize=9, markerfacecolor="none", color=color)
        grid = sorted({lam for kd in results.config["kd"] if kd != NO_KD
                       for lam, _ in results.candidates(dataset, pairing, kd, bits, paradigm)})
        if grid and grid[0] > 0:
            ax.set_xscale("log")
        ax.set_xticks(grid, [format_lambda(lam) for lam in grid])
        ax.minorticks_off()
        ax.set_title(f"{dataset}, {bits} bits, {paradigm}")
        ax.set_xlabel("λ (weight of L_kd)")
        ax.set_ylabel(f"mAP@{k}")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize="x-small", loc="best", ncol=2)
    figure.suptitle(f"λ sensitivity ({pairing.teacher} → {pairing.student}): test solid, validation dashed, "
                    "ring = selected on validation")
    save_figure(figure, path)


def latency_figure(results: GridResults, dataset: str, pairing: Pairing, path: Path) -> bool:
    """Encoder latency (batch 1) against mAP: teacher, student without KD, and the KD student with the
    best *test* mean per bits (a pick made on test data, to show the reachable point; the tables, not
    this figure, compare methods).

    Returns False (and writes nothing) when a batch-1 latency was not measured.
    """
    from matplotlib import colormaps
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    latency = {role: results.encoder[(dataset, alias)].get("latency_ms")
               for role, alias in (("teacher", pairing.teacher), ("student", pairing.student))}
    if None in latency.values():
        return False
    paradigms = results.config["paradigms"]
    k = results.topk(dataset)
    bits_colors = colormaps["viridis"]
    bits_list = results.config["bits"]
    figure, axes = _figure(len(paradigms))
    for ax, paradigm in zip(axes, paradigms):
        for i, bits in enumerate(bits_list):
            color = bits_colors(i / max(1, len(bits_list) - 1) * 0.85)

            def mean(method: Method) -> float | None:
                summary = summarize(results.values(dataset, pairing, method, bits, paradigm, "map@K"))
                return None if summary is None else summary.mean

            teacher = mean(teacher_row(pairing))
            if teacher is not None:
                ax.plot([latency["teacher"]], [teacher], marker="*", markersize=12, color=color, linestyle="none")
            if NO_KD in results.config["kd"] and (baseline := mean(student_row(pairing, NO_KD))) is not None:
                ax.plot([latency["student"]], [baseline], marker="x", markersize=8, color=color, linestyle="none")
            kd_means = [(m, kd) for kd in results.config["kd"] if kd != NO_KD
                        if (m := mean(student_row(pairing, kd))) is not None]
            if kd_means:
                best, name = max(kd_means)
                ax.plot([latency["student"]], [best], marker="o", markersize=7, color=color, linestyle="none")
                ax.annotate(name, (latency["student"], best), textcoords="offset points", xytext=(6, 4),
                            fontsize="small", color=color)
        ax.set_xscale("log")
        ax.margins(x=0.2, y=0.1)
        plain = FuncFormatter(lambda x, _: f"{x:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.set_title(f"{dataset}, {paradigm}")
        ax.set_xlabel("encoder latency, batch 1 (ms/image, log scale)")
        ax.set_ylabel(f"mAP@{k}")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], marker="*", color="black", linestyle="none", markersize=10, label="teacher"),
               Line2D([], [], marker="x", color="black", linestyle="none", label="student, no KD"),
               Line2D([], [], marker="o", color="black", linestyle="none", label="student, best KD (on test)")]
    handles += [Line2D([], [], marker="s", linestyle="none",
                       color=bits_colors(i / max(1, len(bits_list) - 1) * 0.85), label=f"{b} bits")
                for i, b in enumerate(bits_list)]
    axes[-1].legend(handles=handles, fontsize="small", loc="best")
    figure.suptitle(f"Encoder latency vs mAP@{k} ({pairing.teacher} → {pairing.student})")
    save_figure(figure, path)
    return True


# --------------------------------------------------------------------------- the document


def header(results: GridResults) -> list[str]:
    config = results.config
    policies = sorted({str(r.get("tie_policy")) for r in results.metrics.values()})
    seeds = config["seeds"]
    mode = config["mode"]
    if mode == "bank":
        mode += f" (feature banks, {config['views']} augmented views per training image)"
    first = {}
    for (cell, _), record in sorted(results.metrics.items(), key=lambda item: item[1]["_source"]):
        first.setdefault(cell.dataset, record.get("counts", {}))
    datasets = [f"{d} (K = {results.topk(d)}; {first[d].get('queries', '?')} queries, "
                f"{first[d].get('database', '?')} database images)" for d in config["datasets"]]
    paradigms = "; ".join(f"`{p}`: {PARADIGM_LEGEND.get(p, p)}" for p in config["paradigms"])
    return [
        f"# BRCD benchmark report: `{config['name']}`",
        "",
        f"> Generated by `brcd report` from the metrics and timing files under `results/` for the grid "
        f"config `{config['name']}`; do not edit: rerun `snakemake` (rule `report`) to refresh it.",
        "",
        *([f"**{config['description'].strip()}**", ""] if config.get("description") else []),
        f"- **mode**: {mode}",
        f"- **seeds**: {len(seeds)} ({', '.join(map(str, seeds))}); {seed_note(config)}",
        f"- **uncertainty**: {uncertainty_note(config)}",
        f"- **schedule**: {schedule_note(config)}",
        f"- **convergence**: {convergence_note(results)}",
        f"- **tie policy**: {'; '.join(policies)} (tie-aware mAP: expectation over orderings of tied items)",
        f"- **datasets**: {'; '.join(datasets)}",
        f"- **hashing**: {', '.join(config['hash'])}; **teachers**: {', '.join(config['teachers'])}; "
        f"**students**: {', '.join(config['students'])}; **bits**: {', '.join(map(str, config['bits']))}",
        f"- **paradigms**: {paradigms}; the teacher row is the teacher searching its own codes",
        f"- **distillation settings**: {kd_settings_note(config)}",
        f"- **run time**: {run_time_note(results)}",
        "",
    ]


def run_time_note(results: GridResults) -> str:
    span = span_text(results)
    if span is None:
        return "not measured (no Snakemake benchmark files for this grid's jobs)"
    return f"before this report, {span} (Snakemake's benchmark files; per stage: section \"Time per stage\")"


#: what the ``seeds`` axis varies (SPEC §2-§4: everything random in training), by mode
SEED_VARIES = ("head initialisation, batch order, the pair of views drawn per image and step, "
               "memory banks and negatives of the contrastive baselines, k-means seeding of the clusters, "
               "and the teacher itself (seed s distils the teacher trained with seed s)")
SEED_FIXED = {
    "bank": "the data split (`split_seed`), the stored augmented views (`aug_seed`; training draws pairs "
            "among them) and the pretrained backbone weights",
    "online": "the data split (`split_seed`) and the pretrained backbone weights (augmentations are drawn "
              "afresh from the seed)",
}


def kd_settings_note(config: Mapping) -> str:
    """The config's departures from each method's defaults (the reference code's settings)."""
    from brcd.tuning import format_lambda, lambda_grid

    grids = {kd: ", ".join(map(format_lambda, lambda_grid(config, kd))) for kd in config["kd"] if kd != NO_KD}
    same = len(set(grids.values())) == 1
    lam = (f"λ ∈ {{{next(iter(grids.values()))}}} for every method" if same and grids
           else "; ".join(f"`{kd}` λ ∈ {{{g}}}" for kd, g in grids.items()))
    overrides = config.get("kd_settings") or {}
    changed = "; ".join(f"`{kd}`: " + ", ".join(f"{k} = {v}" for k, v in sorted(values.items()))
                        for kd, values in sorted(overrides.items()) if values)
    return (f"{lam}, chosen on validation; every other setting at the method's default (the reference "
            "code's, except where the README's baseline table says why not)"
            + (f"; changed by the config: {changed}" if changed else ""))


def seed_note(config: Mapping) -> str:
    from brcd.tuning import tuning_seed

    note = f"seeds vary {SEED_VARIES}; fixed across seeds: {SEED_FIXED[config['mode']]}"
    if len(config["seeds"]) > 1:
        note += (f". Seed {tuning_seed(config)} is the tuning seed: its run of each method is the best of the λ "
                 "grid on validation, the other seeds' runs are single trainings of that λ")
    return note


def uncertainty_note(config: Mapping) -> str:
    if len(config["seeds"]) > 1:
        return ("tables show mean ± half-width of the 95% Student-t interval over seeds; bold marks the best "
                "student and every student not significantly worse than it (paired bootstrap over seeds and "
                "queries, 95%)")
    return ("**one seed: intervals and significance cover query sampling only**, not training randomness "
            "(seeds, teacher); tables show the single run's value; bold marks the best student and every "
            "student not significantly worse than it on a bootstrap over queries")


def schedule_note(config: Mapping) -> str:
    """Each role's training schedule and early-stopping rule, from the settings the runs used."""
    from brcd.train import TrainSettings

    def rule(role: str) -> str:
        t = TrainSettings.from_config(config, role)
        gain = f"an improvement of more than {t.min_delta:g} mAP" if t.min_delta else "an improvement"
        return (f"{role}s: Adam lr {t.lr:g}, batch {t.batch_size}, validation every {t.eval_every} epochs, "
                f"stop after {t.patience} validations without {gain} (not before epoch {t.min_epochs}), "
                f"cap {t.epochs} epochs")

    return "; ".join(rule(role) for role in ("teacher", "student"))


def convergence_note(results: GridResults) -> str:
    """Counts the runs the tables show (the teacher's, and each method's selected λ per seed and
    paradigm), so that the count matches the † marks; λ candidates not selected are left out."""
    shown = [(cell, record) for (cell, paradigm), record in results.metrics.items()
             if shown_in_tables(results, cell, paradigm)]
    runs = [record for _, record in shown]
    flagged = sum(not converged(run) for run in runs)
    epochs = stopping_epochs(shown)
    if not flagged:
        return f"every one of the {len(runs)} runs in the tables stopped early or peaked before its epoch cap{epochs}"
    return (f"**{flagged} of the {len(runs)} runs in the tables hit their epoch cap while their best validation was "
            f"the last one** (still improving; cells marked {UNCONVERGED}){epochs}")


def stopping_epochs(shown: Sequence[tuple[Cell, Mapping]]) -> str:
    """How long the runs in the tables trained, by role, as a clause of the convergence note:
    "; student runs trained 12–88 epochs (median 44) of a 160-epoch cap, ..." ("" without
    training records). A run whose heads both show (sym and asym of one λ) counts once."""
    import statistics

    parts = []
    for role, is_role in (("student", lambda c: c.student is not None), ("teacher", lambda c: c.student is None)):
        runs = {(cell, record.get("lambda")): record["training"] for cell, record in shown
                if is_role(cell) and {"epochs_run", "epoch_cap"} <= set(record.get("training") or {})}
        if not runs:
            continue
        ran = [int(r["epochs_run"]) for r in runs.values()]
        caps = "/".join(str(cap) for cap in sorted({int(r["epoch_cap"]) for r in runs.values()}))
        low, high = min(ran), max(ran)
        how_long = f"{low} epochs" if low == high else f"{low}–{high} epochs (median {statistics.median(ran):g})"
        parts.append(f"{role} runs trained {how_long} of a {caps}-epoch cap")
    return "; " + ", ".join(parts) if parts else ""


def shown_in_tables(results: GridResults, cell: Cell, paradigm: str) -> bool:
    """The teacher's runs and, per student method, seed and paradigm, the run of the selected λ."""
    return cell.student is None or results.variant(cell, paradigm) == cell.variant


def dataset_section(results: GridResults, dataset: str, figures_dir: Path, figures_link: str) -> list[str]:
    k = results.topk(dataset)
    pairings = results.pairings()
    lines = [f"## {dataset}", ""]
    for pairing in pairings:
        many = len(pairings) > 1
        suffix = f", {pairing.label}" if many else ""
        slug = f"_{pairing.slug}" if many else ""
        if not many:
            lines += [f"Teacher → student: {pairing.label}.", ""]
        lines += [f"### Main results: mAP@{k}{suffix}", "",
                  metric_table(results, dataset, pairing, main_methods(results, pairing), "map@K",
                               contenders=student_methods(results, pairing)), "",
                  f"{main_bold_note(results)} {UNCONVERGED}: a seed of this cell hit its epoch cap "
                  "while still improving. Each method runs with its λ chosen on validation (table "
                  "\"λ chosen on validation\" below). The teacher row (paradigm `teacher`) is repeated under "
                  "sym and asym of each code length and is never bolded.", ""]
        kd_rows = [student_row(pairing, kd) for kd in results.kd_methods()]
        if NO_KD in results.config["kd"] and kd_rows:
            lines += [f"### Δ mAP@{k} vs the student without KD{suffix}", "",
                      delta_table(results, dataset, pairing, kd_rows, student_row(pairing, NO_KD)), "",
                      f"Δ = method − no KD; bold: the 95% interval excludes 0; {interval_note(results)}.", ""]
        ablations = results.ablations()
        if ablations:
            methods = [student_row(pairing, kd) for kd in ablations]
            lines += [f"### Ablation: mAP@{k}{suffix}", "",
                      metric_table(results, dataset, pairing, methods, "map@K",
                                   contenders=student_methods(results, pairing)), "",
                      ablation_note(ablations), ""]
            if ablations[0] == "brcd":
                lines += [f"Δ mAP@{k} of each ablation vs full `brcd`:", "",
                          delta_table(results, dataset, pairing, methods[1:], methods[0]), "",
                          f"Δ = ablation − `brcd`; bold: the 95% interval excludes 0; {interval_note(results)}.", ""]
        lines += lambda_section(results, dataset, pairing, suffix, figures_dir, figures_link, slug)
        methods = student_methods(results, pairing)
        lines += [f"### Alignment with the teacher{suffix}", "",
                  "ISD (mean normalised Hamming distance between teacher and student codes of the same query "
                  "image; lower = closer):", "",
                  metric_table(results, dataset, pairing, methods, "isd", higher_is_better=False), "",
                  f"NRA@{k} (overlap of the teacher's and the student's top-{k} database neighbours; "
                  "higher = closer):", "",
                  metric_table(results, dataset, pairing, methods, "nra@K"), "",
                  "Bold: the best per column and every method not significantly worse (paired 95% Student-t "
                  "interval over seeds: these metrics have no per-query values; no bold with one seed).", ""]
        lines += [f"### Tie-aware mAP and precision@k{suffix}", "",
                  "Means over seeds. Tie-aware values average over all orderings of items at equal Hamming "
                  "distance; the conventional ones break ties by database order.", ""]
        for paradigm in results.config["paradigms"]:
            lines += [f"**{paradigm}**", "", secondary_table(results, dataset, pairing, paradigm), ""]
        lines += write_figures(results, dataset, pairing, figures_dir, figures_link, slug, suffix)
    lines += [f"### Encoder timing ({dataset} images)", "",
              encoder_table(results, dataset), "",
              "Decoded image to packed code (preprocessing, frozen backbone, hash head, sign, bit packing), "
              "median after warm-up. Speed-up: the teacher's batch-1 latency over this backbone's, and this "
              "backbone's throughput over the teacher's.", ""]
    return lines


def lambda_section(results: GridResults, dataset: str, pairing: Pairing, suffix: str, figures_dir: Path,
                   link: str, slug: str) -> list[str]:
    """Which λ each method got, how much its choice matters, and the sensitivity figures."""
    from brcd.tuning import format_lambda, lambda_grid, tuning_seed

    methods = [kd for kd in results.config["kd"] if kd != NO_KD]
    if not methods:
        return []
    grids = sorted({", ".join(map(format_lambda, lambda_grid(results.config, kd))) for kd in methods})
    lines = [f"### λ chosen on validation{suffix}", "",
             f"Every distilled method tried λ ∈ {{{'} or {'.join(grids)}}} (the weight of L_kd) with seed "
             f"{tuning_seed(results.config)}; per column, the λ with the best validation mAP of the head selected "
             "for that paradigm was kept, and the other seeds trained only it. The tables above use it. Query "
             "labels never reach the choice.", "",
             lambda_table(results, dataset, pairing), "",
             f"Spread of test mAP@{results.topk(dataset)} over each method's λ grid (max − min; validation in "
             "parentheses), seed " f"{tuning_seed(results.config)}: small = robust to λ, large = fragile.", "",
             spread_table(results, dataset, pairing), ""]
    for bits in results.config["bits"]:
        name = f"lambda_{dataset}_{bits}{slug}.png"
        sensitivity_figure(results, dataset, pairing, bits, figures_dir / name)
        lines += [f"![λ sensitivity, {dataset}, {bits} bits]({link}/{name})", ""]
    return lines


def main_bold_note(results: GridResults) -> str:
    if not results.ablations():
        return ("Bold: the best student per column and every student not significantly worse than it "
                "(tied with the best).")
    return ("Bold: the best student per column, the ablation variants below included, and every student not "
            "significantly worse than it (tied with the best: the group of the findings, shown across this table "
            "and the ablation table; a column whose best is an ablation variant may have no bold here).")


def ablation_note(ablations: Sequence[str]) -> str:
    notes = [f"`{kd}`: {ABLATION_NOTES[kd]}" for kd in ablations if kd in ABLATION_NOTES]
    return ("; ".join(notes) + ("." if notes else "")
            + " Bold: tied with the column's best student, the same group as in the main table.")


def write_figures(results: GridResults, dataset: str, pairing: Pairing, figures_dir: Path, link: str,
                  slug: str, suffix: str) -> list[str]:
    lines = [f"### Figures{suffix}", ""]
    for bits in results.config["bits"]:
        name = f"pr_{dataset}_{bits}{slug}.png"
        pr_figure(results, dataset, pairing, bits, figures_dir / name)
        lines += [f"![Precision–recall, {dataset}, {bits} bits]({link}/{name})", ""]
    name = f"map_vs_bits_{dataset}{slug}.png"
    map_bits_figure(results, dataset, pairing, figures_dir / name)
    lines += [f"![mAP vs bits, {dataset}]({link}/{name})", ""]
    name = f"latency_vs_map_{dataset}{slug}.png"
    if latency_figure(results, dataset, pairing, figures_dir / name):
        lines += [f"![Encoder latency vs mAP, {dataset}]({link}/{name})", ""]
    else:
        lines += ["(No latency-vs-mAP figure: batch-1 latency was not measured; add 1 to `timing.batch_sizes`.)", ""]
    return lines


# --------------------------------------------------------------------------- generated findings

#: what each BRCD ablation removes, as the findings name it
ABLATION_COMPONENTS = {
    "brcd_nomask": "the bit mask",
    "brcd_nocluster": "the cluster terms",
    "brcd_plain": "both the bit mask and the cluster terms",
}


def _method_list(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "none"


def column_statements(results: GridResults, dataset: str, pairing: Pairing, bits: int,
                      paradigm: str) -> list["Statement"]:
    """Everything one column's paired intervals support, as :class:`brcd.conclusions.Statement`
    rows: each KD method against the student without KD, every student against the column's
    best (the bold of the tables), and each BRCD ablation against full ``brcd``."""
    from brcd.conclusions import VS_BEST, VS_BRCD, VS_NO_KD, Statement
    from brcd.stats import compare

    column = {"dataset": dataset, "hash": pairing.hash, "teacher": pairing.teacher, "student": pairing.student,
              "bits": bits, "paradigm": paradigm}
    students = list(results.config["kd"])
    samples = {kd: results.samples(dataset, pairing, student_row(pairing, kd), bits, paradigm, "map@K")
               for kd in students}
    mean = lambda kd: float(samples[kd].mean()) if samples[kd] is not None else math.nan  # noqa: E731
    found = []
    if NO_KD in students:
        for kd in [kd for kd in students if kd != NO_KD]:
            c = compare(samples[kd], samples[NO_KD], seed=BOOTSTRAP_SEED)
            found.append(Statement.compared(column, VS_NO_KD, kd, NO_KD, mean(kd), c))
    compared = compared_to_best(samples)
    if compared is not None:
        best, comparisons = compared
        found.append(Statement.best(column, best, mean(best)))
        found += [Statement.compared(column, VS_BEST, kd, best, mean(kd), c) for kd, c in comparisons.items()]
    if "brcd" in students:
        for kd in [kd for kd in results.ablations() if kd in ABLATION_COMPONENTS]:
            c = compare(samples[kd], samples["brcd"], seed=BOOTSTRAP_SEED)
            found.append(Statement.compared(column, VS_BRCD, kd, "brcd", mean(kd), c))
    return found


COMPONENT_VERDICTS = {"better": "significantly higher", "worse": "significantly lower",
                      "level": "no significant change"}


def render_column_findings(statements: Sequence["Statement"], methods: Sequence[str], has_baseline: bool) -> list[str]:
    """The findings of one column; ``methods``: the config's order of the students."""
    from brcd.conclusions import VS_BEST, VS_BRCD, VS_NO_KD

    def of(kind: str, verdicts: Iterable[str]) -> list["Statement"]:
        return [s for s in statements if s.kind == kind and s.verdict in verdicts]

    def listed(kind: str, verdict: str) -> str:
        return _method_list([f"`{s.method}` ({interval_text(s)})" for s in of(kind, {verdict})])

    lines = []
    if has_baseline:
        lines += [f"  - better than the student without KD: {listed(VS_NO_KD, 'better')}",
                  f"  - worse than it: {listed(VS_NO_KD, 'worse')}",
                  f"  - not distinguishable from it: {listed(VS_NO_KD, 'level')}"]
    best = of(VS_BEST, {"best"})
    if best:
        tied = sorted(of(VS_BEST, {"best", "tied"}), key=lambda s: list(methods).index(s.method))
        lines.append(f"  - tied with the best (`{best[0].method}`, mAP {best[0].mean:.{DIGITS}f}): "
                     + ", ".join(f"`{s.method}`" for s in tied))
    components = [f"without {ABLATION_COMPONENTS[s.method]} (`{s.method}`): {interval_text(s)}, "
                  f"{COMPONENT_VERDICTS[s.verdict]}" for s in of(VS_BRCD, COMPONENT_VERDICTS)]
    if components:
        lines.append("  - BRCD's components, Δ vs full `brcd`: " + "; ".join(components))
    return lines


def overall_findings(results: GridResults, by_column: Sequence[Sequence["Statement"]]) -> list[str]:
    """Per method, in how many columns it beats no KD and is tied with the best."""
    from brcd.conclusions import VS_BEST, VS_NO_KD

    n = len(by_column)
    has_baseline = NO_KD in results.config["kd"]

    def count(kd: str, kind: str, verdicts: set[str]) -> int:
        return sum(any(s.kind == kind and s.method == kd and s.verdict in verdicts for s in column)
                   for column in by_column)

    lines = []
    for kd in [kd for kd in results.config["kd"] if kd != NO_KD]:
        vs_baseline = (f"better than no KD in {count(kd, VS_NO_KD, {'better'})} of {n} columns, worse in "
                       f"{count(kd, VS_NO_KD, {'worse'})}; " if has_baseline else "")
        lines.append(f"  - `{kd}`: {vs_baseline}tied with the best in {count(kd, VS_BEST, {'best', 'tied'})} of {n}")
    return lines


def findings_statements(results: GridResults) -> list[list["Statement"]]:
    """:func:`column_statements` of every column, in the order of :func:`rank_columns`."""
    return [column_statements(results, *column) for column in rank_columns(results)]


def findings_section(results: GridResults, by_column: Sequence[Sequence["Statement"]]) -> list[str]:
    """Per column, what the statistics of this report support, generated (never typed): each
    statement is a paired 95% interval of Δ mAP@K (the Δ tables below) that excludes 0 or not.
    ``by_column``: :func:`findings_statements`."""
    if not any(kd != NO_KD for kd in results.config["kd"]):
        return []
    methods = list(results.config["kd"])
    has_baseline = NO_KD in methods
    columns_ = rank_columns(results)
    lines = ["## Findings", "",
             "Generated from the paired 95% intervals of this report (Δ mAP@K, bootstrap over seeds and queries; "
             "the Δ tables below), never typed: *better*/*worse* means the interval excludes 0, *not "
             "distinguishable* that it does not. *Tied with the best*: the best student of the column (ablations "
             "included) and every student not significantly worse than it, the rule of the bold in the tables. "
             + ("With one seed the intervals cover query sampling only." if len(results.config["seeds"]) == 1
                else f"{len(results.config['seeds'])} seeds.")
             + " The same statements, one row each, are in the findings table beside this report "
             "(`brcd compare-conclusions` compares two runs' tables).", "",
             f"- **Over all {len(columns_)} columns**"]
    lines += overall_findings(results, by_column)
    for (dataset, pairing, bits, paradigm), found in zip(columns_, by_column):
        lines.append(f"- **{dataset}, {pairing.label}, {column_header(bits, paradigm)}** (mAP@{results.topk(dataset)})")
        lines += render_column_findings(found, methods, has_baseline)
    return lines + [""]


def rank_columns(results: GridResults) -> list[tuple[str, Pairing, int, str]]:
    return [(d, pairing, b, p) for d in results.config["datasets"] for pairing in results.pairings()
            for b, p in columns(results)]


def rank_scores(results: GridResults) -> tuple[list[str], "np.ndarray"]:
    """Student methods and their mean mAP@K (over seeds) in every column: columns x methods."""
    import numpy as np

    methods = list(results.config["kd"])
    scores = [[summarize(results.values(d, pairing, student_row(pairing, kd), b, p, "map@K")).mean
               for kd in methods] for d, pairing, b, p in rank_columns(results)]
    return methods, np.asarray(scores, dtype=float)


def rank_section(results: GridResults, figures_dir: Path, link: str) -> list[str]:
    """Average rank of every student method over all columns, with Demšar's (2006) critical difference."""
    from brcd.stats import average_ranks, nemenyi_critical_difference

    methods, scores = rank_scores(results)
    n_columns = len(scores)
    if len(methods) < 2:
        return []
    ranks = average_ranks(scores)
    cd = nemenyi_critical_difference(len(methods), n_columns)
    order = sorted(range(len(methods)), key=lambda i: (ranks[i], methods[i]))
    name = "ranks.png"
    rank_figure(results, [methods[i] for i in order], [float(ranks[i]) for i in order], cd, figures_dir / name)
    rows = [[f"`{methods[i]}`", f"{ranks[i]:.2f}"] for i in order]
    return ["## Ranking across all columns", "",
            f"Average rank of each student method by mean mAP over the {n_columns} columns (dataset × pairing × "
            f"bits × paradigm; rank 1 = best, ties share the average rank). Two methods differ significantly "
            f"(Nemenyi test, α = 0.05; Demšar 2006) when their average ranks differ by more than the critical "
            f"difference CD = {cd:.2f}; with few columns the CD is wide, and the per-column intervals above are "
            "the sharper test.", "",
            markdown_table(["method", "average rank"], rows), "",
            f"![Average ranks with critical difference]({link}/{name})", ""]


def rank_figure(results: GridResults, methods: Sequence[str], ranks: Sequence[float], cd: float,
                path: Path) -> None:
    styles = method_styles(results)
    figure, (ax,) = _figure(1, width=7.0, height=0.35 * len(methods) + 1.2)
    y = list(range(len(methods)))[::-1]
    for yi, kd, rank in zip(y, methods, ranks):
        ax.errorbar([rank], [yi], xerr=[[cd / 2], [cd / 2]], color=styles[kd].color, marker="o", capsize=3)
    ax.set_yticks(y, methods)
    ax.set_xlabel(f"average rank (1 = best); bars ± CD/2 = {cd / 2:.2f}: non-overlapping bars differ significantly")
    ax.set_xlim(0.5, len(methods) + 0.5)
    ax.grid(axis="x", alpha=0.3)
    figure.suptitle("Average rank over all columns (Nemenyi critical difference, α = 0.05)")
    save_figure(figure, path)


# --------------------------------------------------------------------------- the tidy table


#: how the metric names of a metrics file become column names
def _metric_columns(record: Mapping) -> dict[str, float | None]:
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


def table_path_for(out: str | os.PathLike) -> Path:
    """``reports/{name}.md`` -> ``reports/{name}.parquet`` (cells.REPORT_TABLE)."""
    return Path(out).with_suffix(".parquet")


def write_tidy_table(results: GridResults, path: Path) -> None:
    import pandas as pd
    import pyarrow as pa

    from brcd.io import write_parquet

    table = pa.Table.from_pandas(pd.DataFrame(tidy_rows(results)), preserve_index=False)
    write_parquet(path, table, {"name": results.config["name"], "config": dict(results.config)})


def findings_path_for(out: str | os.PathLike) -> Path:
    """``reports/{name}.md`` -> ``reports/{name}.findings.parquet`` (cells.REPORT_FINDINGS)."""
    return Path(out).with_suffix(".findings.parquet")


def figures_dir_for(out: str | os.PathLike) -> Path:
    """``reports/{name}.md`` -> ``reports/{name}/``."""
    return Path(out).with_suffix("")


def build_report(results: GridResults, out: str | os.PathLike,
                 statements: Sequence[Sequence["Statement"]] | None = None) -> str:
    """Write the figures beside ``out`` and return the Markdown text (``statements``: the
    findings, :func:`findings_statements`, computed here when not given)."""
    if statements is None:
        statements = findings_statements(results)
    figures_dir = figures_dir_for(out)
    figures_dir.mkdir(parents=True, exist_ok=True)
    link = figures_dir.name  # relative to the Markdown file
    lines = header(results) + findings_section(results, statements)
    for dataset in results.config["datasets"]:
        lines += dataset_section(results, dataset, figures_dir, link)
    lines += rank_section(results, figures_dir, link)
    lines += ["## Search latency", "",
              "Exact Hamming top-K search on packed random codes: one query per call (median), and all queries "
              f"in one call (median time per query). Method: {search_method(results)}.", "",
              search_table(results), "",
              *stage_time_section(results),
              "## Config hashes", "",
              "<details><summary>Config hash of every cell (the hash of every config value the cell's result "
              "depends on)</summary>", "",
              config_hash_table(results), "", "</details>", ""]
    return "\n".join(lines)


def write_report(config: Mapping, out: str | os.PathLike, results_dir: str | os.PathLike = ".",
                 config_path: str | None = None) -> Path:
    from brcd.io import atomic_path

    from brcd.conclusions import write_statements

    results = load_results(config, results_dir, config_path)
    statements = findings_statements(results)
    text = build_report(results, out, statements)
    write_tidy_table(results, table_path_for(out))
    write_statements(findings_path_for(out), [s for column in statements for s in column], config["name"])
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return Path(out)


# --------------------------------------------------------------------------- CLI


def configure_parser(parser) -> None:
    parser.add_argument("--config", required=True, help="grid config YAML (e.g. results/.config/{name}.yaml)")
    parser.add_argument("--out", required=True, help="reports/{name}.md; figures go to reports/{name}/")
    parser.add_argument("--results-dir", default=".", help="folder holding results/ (default: current folder)")


def run(args) -> None:
    from brcd.config import load_config

    config = load_config(args.config, check_registries=False)
    path = write_report(config, args.out, args.results_dir, config_path=args.config)
    log.info("-> %s (figures in %s)", path, figures_dir_for(path))
