"""The grid's results in memory, and the rows and columns the report lays them out in.

:class:`GridResults` holds every input file of a report, loaded and checked
(:func:`brcd.report.results.load_results`), and answers the questions of the tables,
figures and findings: which runs make up a table cell (:meth:`GridResults.runs`,
one per seed, the λ selected on validation), their values, their per-query samples.
A table's rows are :class:`Method`s of a :class:`Pairing`; its columns are bits x
paradigm (:func:`columns`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Mapping

from brcd.cells import Cell
from brcd.errors import DataError
from brcd.io import rebuild_hint
from brcd.lambdas import NO_KD, SELECTED, at_grid_edge, lambda_grid, tuning_seed, variant_of
from brcd.tuning import METHOD_KEYS

if TYPE_CHECKING:
    import numpy as np

    from brcd.runs import Run

#: kd methods whose names start with this are BRCD ablations (own table)
ABLATION_PREFIX = "brcd_"
#: the paradigm of the teacher's own metrics file
TEACHER_PARADIGM = "teacher"


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


@dataclass(frozen=True)
class BenchmarkRow:
    """One job's Snakemake benchmark record: wall seconds, peak memory (MB), CPU seconds, and
    when it ended (the file's modification time)."""

    seconds: float
    max_rss_mb: float | None
    cpu_seconds: float | None
    ended: float


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
    benchmarks: dict[str, tuple[int, list[BenchmarkRow]]] = field(default_factory=dict)
    # kd -> (its student-training jobs, benchmark rows of those that have one): workflow.student_training_files
    training_cost: dict[str, tuple[int, list[BenchmarkRow]]] = field(default_factory=dict)
    # the Snakemake runs of the grid in this folder, by start, each with an end (brcd.runs.grid_runs)
    snakemake_runs: list["Run"] = field(default_factory=list)
    # (dataset, pairing, bits, paradigm) -> its families of tests (brcd.report.families), kept once computed
    tests: dict[tuple, object] = field(default_factory=dict, repr=False, compare=False)

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
        if cell.seed != tuning_seed(self.config):
            return SELECTED
        return variant_of(self.selected_lambda(cell, paradigm))

    def selected_lambda(self, cell: Cell, paradigm: str) -> float:
        return float(self.selections[method_key(cell)]["paradigms"][paradigm]["lambda"])

    def candidates(self, dataset: str, pairing: Pairing, kd: str, bits: int, paradigm: str) -> list[tuple[float, dict]]:
        """(λ, metrics file) of every λ candidate of a method (tuning seed), in grid order."""
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

    def lambda_at_edge(self, cell: Cell, paradigm: str) -> bool:
        """Whether the λ selected for this method and paradigm is at an edge of the method's grid."""
        return at_grid_edge(lambda_grid(self.config, cell.kd), self.selected_lambda(cell, paradigm))

    def kd_grad_ratio(self, dataset: str, pairing: Pairing, kd: str, bits: int, paradigm: str) -> float | None:
        """λ·‖∇L_kd‖ / ‖∇L_hash‖ at the end of training of the runs a table cell shows, averaged over
        seeds (geometric mean); None when a run has no record of it (trained before issue 27)."""
        runs = self.runs(dataset, pairing, Method(f"`{kd}`", kd), bits, paradigm)
        ratios = [(run.get("training") or {}).get("kd_grad_ratio") for run in runs]
        if not ratios or any(r is None or not math.isfinite(r) or r <= 0 for r in ratios):
            return None
        return math.exp(sum(math.log(r) for r in ratios) / len(ratios))

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
                f"`brcd evaluate`: {rebuild_hint(record['_source'])}"
            )
        value = value[part]
    return None if value is None else float(value)


def method_key(cell: Cell) -> tuple:
    return tuple(getattr(cell, key) for key in METHOD_KEYS)


# --------------------------------------------------------------------------- table rows and columns


def teacher_row(pairing: Pairing) -> Method:
    return Method(f"teacher (`{pairing.teacher}`)", None)


def student_row(pairing: Pairing, kd: str) -> Method:
    if kd == NO_KD:
        return Method(f"student, no KD (`{pairing.student}`)", kd)
    return Method(f"`{kd}`", kd)


def columns(results: GridResults) -> list[tuple[int, str]]:
    """The columns of a dataset's tables: (bits, paradigm)."""
    return [(bits, paradigm) for bits in results.config["bits"] for paradigm in results.config["paradigms"]]


def column_header(bits: int, paradigm: str) -> str:
    return f"{bits} bits {paradigm}"


def main_methods(results: GridResults, pairing: Pairing) -> list[Method]:
    baseline = [student_row(pairing, NO_KD)] if NO_KD in results.config["kd"] else []
    return [teacher_row(pairing), *baseline, *(student_row(pairing, kd) for kd in results.kd_methods())]


def student_methods(results: GridResults, pairing: Pairing) -> list[Method]:
    return [student_row(pairing, kd) for kd in results.config["kd"]]


def rank_columns(results: GridResults) -> list[tuple[str, Pairing, int, str]]:
    """Every column of the report (dataset x pairing x bits x paradigm): what the findings and the
    ranking go through, in this order."""
    return [(d, pairing, b, p) for d in results.config["datasets"] for pairing in results.pairings()
            for b, p in columns(results)]


def shown_in_tables(results: GridResults, cell: Cell, paradigm: str) -> bool:
    """The teacher's runs and, per student method, seed and paradigm, the run of the selected λ."""
    return cell.student is None or results.variant(cell, paradigm) == cell.variant
