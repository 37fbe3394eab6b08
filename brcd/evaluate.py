"""``brcd evaluate``: retrieval metrics of one cell in one or more search paradigms.

Paradigms (:data:`PARADIGMS`, SPEC §1) say which code file supplies each side
of the search:

========  ===============  ==================
name      query codes      database codes
========  ===============  ==================
sym       student          student
asym      student          teacher
teacher   teacher          teacher
========  ===============  ==================

Query codes are the ``query`` rows of their file, database codes the
``database`` rows, both in ascending dataset index ("database order" of the
tie policy); labels come from the split file.

One call may evaluate several paradigms of a student cell (``--paradigm sym
asym``, with one ``--student-codes`` and one ``--out`` per paradigm, in the
same order), and several runs of one model: ``--cell`` with ``variant=`` or
``seed=`` repeated names one run per seed and variant (seed-major), with one
``--teacher-codes`` per seed, one ``--config-hash`` per run, and the
per-paradigm options once per run and paradigm (run-major). The workflow
evaluates the runs one student training job wrote in one job, in every
paradigm of the grid: rules ``evaluate_candidates*`` (a method's λ candidates
of the tuning seed) and ``evaluate_selected`` (its other seeds' runs of the
selected λ). The split and each code file are read once (a seed's teacher
codes serve all its runs), and every run and paradigm gets the same two files,
byte for byte, as a call of its own would write. A teacher cell has the one
paradigm ``teacher`` (rule ``evaluate_teacher``, one job per teacher run).

Output JSON (``metrics/{paradigm}.json``), the contract with the report
generator; ``K`` below is the value of ``topk``::

    {
      "dataset": str, "bits": int, "hash": str, "teacher": str,
      "student": str | null, "kd": str | null, "variant": str | null, "seed": int,
      "paradigm": "sym" | "asym" | "teacher",
      "topk": K,
      "tie_policy": "hamming distance ascending, ties by database order",
      "config_hash": str,            # of the evaluated model (student file, else teacher file)
      "metrics": {
        "map@K": float,              # conventional mAP@K (SPEC §6)
        "map@K_tie_aware": float,    # expectation over orderings of tied items
        "map_all": float,            # conventional mAP over the whole database
        "map_all_tie_aware": float,
        "precision@k": {"1": float, "10": float, "100": float, "1000": float, "K": float},
                                     # cut-offs larger than the database are left out
        "pr_curve": {"radius": [0..L], "precision": [float | null], "recall": [float | null],
                     "retrieved_share": [float]},
        "isd": float,                # student cells only: teacher vs student query codes
        "nra@K": float               # student cells only
      },
      "counts": {"queries": int, "database": int},
      "query_side": "student" | "teacher", "database_side": "student" | "teacher",
      "codes": {"teacher": path, "student": path | null},
      "split": path,
      "search_threads": int,
      "training": {                  # how the evaluated head was trained (null for old code files)
        "epochs_run", "epoch_cap", "last_validation", "best_epoch": int, "val_map": float,
        "stopped_early": bool, "converged": bool   # false: hit the cap while still improving
      } | null,
      "per_query": path,             # the per-query values (below)
      "lambda": float | null,        # students: the λ the evaluated head was trained with
      "selection": {                 # students, with --selection: how λ was chosen (brcd.tuning)
        "tuning_seed": int, "grid": [float], "selected": float,   # λ* of this paradigm
        "criterion": str, "candidates": {λ: validation mAP}, "is_selected": bool
      } | null
    }

Per-query file (``metrics/{paradigm}.queries.parquet``), one row per query in
ascending dataset index: ``index`` (the query's dataset index), ``ap@K``,
``ap@K_tie_aware`` and ``relevant@K`` (relevant items in the top K); file
metadata: the cell, paradigm, topk, tie policy and config hash. Any two cells
evaluated on the same queries can be compared query by query
(:mod:`brcd.stats`). Wall-clock time goes to the log only, so identical runs
give identical files.

Metric definitions: :mod:`brcd.retrieval.metrics`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from brcd.argtypes import positive_int
from brcd.errors import ConfigError, DataError, MetadataMismatchError
from brcd.layout import per_query_path
from brcd.retrieval.paradigms import PARADIGMS, Paradigm

log = logging.getLogger(__name__)


CELL_KEYS = ("dataset", "bits", "hash", "teacher", "student", "kd", "variant", "seed")
INT_KEYS = ("bits", "seed")
DEFAULT_PRECISION_AT = (1, 10, 100, 1000)


# --------------------------------------------------------------------------- the cell


def parse_cell(items: list[str], paradigm: Paradigm, paradigm_name: str) -> dict:
    """``["dataset=cifar10", "bits=16", ...]`` -> cell dict with int bits and seed."""
    cell: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise ConfigError(f"--cell: {item!r} is not key=value (e.g. --cell dataset=cifar10 bits=16 ...)")
        if key not in CELL_KEYS:
            raise ConfigError(f"--cell: unknown key {key!r}; allowed keys: {', '.join(CELL_KEYS)}")
        if key in INT_KEYS:
            try:
                value = int(value)
            except ValueError:
                raise ConfigError(f"--cell: {key} must be an integer, got {value!r}") from None
        cell[key] = value
    required = ["dataset", "bits", "hash", "teacher", "seed"]
    if paradigm.needs_student:
        required += ["student", "kd", "variant"]
    missing = [key for key in required if key not in cell]
    if missing:
        raise ConfigError(f"--cell lacks {', '.join(f'{k}=...' for k in missing)} (paradigm {paradigm_name})")
    if not paradigm.needs_student and ({"student", "kd", "variant"} & set(cell)):
        raise ConfigError(
            f"--cell names a student but paradigm {paradigm_name!r} uses teacher codes only; "
            "drop student=/kd=/variant= or choose paradigm sym or asym"
        )
    return {key: cell.get(key) for key in CELL_KEYS}


#: the --cell keys that may be given several times, naming several runs of one model (one per value)
RUN_KEYS = ("seed", "variant")


def parse_cells(items: list[str], paradigm: Paradigm, paradigm_name: str) -> list[dict]:
    """``--cell`` -> one cell dict per run (:func:`parse_cell`): ``seed=`` and ``variant=`` may each be given
    several times, one run per seed and variant, seed-major; every other key once."""
    shared: list[str] = []
    values: dict[str, list[str]] = {key: [] for key in RUN_KEYS}
    for item in items:
        key = item.partition("=")[0]
        (values[key] if key in values else shared).append(item)
    keys = [item.partition("=")[0] for item in shared]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    repeated += sorted({item for given in values.values() for item in given if given.count(item) > 1})
    if repeated:
        raise ConfigError(f"--cell gives {', '.join(repeated)} more than once; name each value once (only seed= and "
                          "variant= may be repeated, to name several runs)")
    return [parse_cell([*shared, *(item for item in (seed, variant) if item)], paradigm, paradigm_name)
            for seed in values["seed"] or [None] for variant in values["variant"] or [None]]


def expected_metadata(cell: Mapping, role: str) -> dict:
    """What the metadata of the ``role`` code file of ``cell`` must say (model name as in brcd.cells)."""
    from brcd.cells import Cell

    model = Cell(**{key: cell.get(key) for key in CELL_KEYS})
    if role == "teacher":
        model = model.teacher_cell()
    return {**model.parameters(), "model": model.model}


# --------------------------------------------------------------------------- inputs


@dataclass
class SplitCodes:
    """One model's query and database codes, aligned with the split file."""

    query: np.ndarray  # packed, ascending dataset index
    database: np.ndarray
    query_index: np.ndarray
    database_index: np.ndarray
    metadata: dict


def _side(codes, name: str, path, expected_index: np.ndarray, split_path) -> tuple[np.ndarray, np.ndarray]:
    part = codes.select(name)
    order = np.argsort(part.index, kind="stable")
    index, packed = part.index[order], part.packed[order]
    if len(np.unique(index)) != len(index):
        raise DataError(f"{path}: split {name!r} lists some dataset index twice; re-encode it")
    unknown = np.setdiff1d(index, expected_index)
    if len(unknown):
        raise DataError(
            f"{path}: {len(unknown)} {name} codes (e.g. dataset index {int(unknown[0])}) have no {name} labels in "
            f"{split_path}; the code file was encoded for another split. Re-encode it with this split file"
        )
    absent = np.setdiff1d(expected_index, index)
    if len(absent):
        raise DataError(
            f"{path}: {len(absent)} {name} images of {split_path} (e.g. dataset index {int(absent[0])}) have no code; "
            "re-encode it with this split file"
        )
    return index, packed


def load_split_codes(path, splits) -> SplitCodes:
    from brcd.codes import read_codes

    codes = read_codes(path)
    q_index, q_packed = _side(codes, "query", path, splits.indices["query"], splits.path)
    db_index, db_packed = _side(codes, "database", path, splits.indices["database"], splits.path)
    return SplitCodes(q_packed, db_packed, q_index, db_index, codes.metadata)


def check_inputs(cell: Mapping, paradigm: Paradigm, paths: Mapping[str, str], config_hash: str | None,
                 read_metadata=None) -> dict:
    """Check code file metadata against each other and the cell; return metadata by role.
    ``read_metadata(path)``: how a file's metadata is read (default: from the file)."""
    from brcd.io import check_metadata, read_parquet_metadata

    metadata = {role: (read_metadata or read_parquet_metadata)(path) for role, path in paths.items()}
    if "student" in metadata:
        t, s = metadata["teacher"], metadata["student"]
        for key in ("dataset", "bits"):
            if t.get(key) != s.get(key):
                raise MetadataMismatchError(
                    f"teacher codes {paths['teacher']} have {key} {t.get(key)!r} but student codes "
                    f"{paths['student']} have {key} {s.get(key)!r}; pass code files of the same {key}"
                )
    for role, found in metadata.items():
        check_metadata(found, expected_metadata(cell, role), f"{role} code file {paths[role]}",
                       f"Pass the {role} codes of the requested cell (or fix --cell).")
    selection = metadata.get("student", {}).get("selection")
    if selection is not None and selection != paradigm.student_head:
        raise MetadataMismatchError(
            f"student code file {paths['student']} holds the head selected for {selection!r}, but this paradigm "
            f"evaluates the head selected for {paradigm.student_head!r}; pass "
            f"{'codes_asym.parquet' if paradigm.student_head == 'asym' else 'codes.parquet'} of the student"
        )
    cell_role = "student" if paradigm.needs_student else "teacher"
    if config_hash is not None:
        check_metadata(metadata[cell_role], {"config_hash": config_hash}, f"{cell_role} code file {paths[cell_role]}",
                       "It was produced with another config; rerun the workflow to rebuild it.")
    return metadata


def check_split(splits, cell: Mapping, metadata: Mapping[str, dict], paths: Mapping[str, str]) -> None:
    from brcd.io import check_metadata

    check_metadata(splits.metadata, {"dataset": cell["dataset"]}, f"split file {splits.path}",
                   f"Pass results/{cell['dataset']}/split.parquet.")
    for role, found in metadata.items():
        if "split" in found and found["split"] != splits.fingerprint:
            raise MetadataMismatchError(
                f"{role} code file {paths[role]} was encoded for another draw of the splits than {splits.path} "
                f"(split fingerprint {found['split']} vs {splits.fingerprint}); re-encode it with this split file"
            )


# --------------------------------------------------------------------------- evaluation


def evaluate_cell(split_path, teacher_codes, paradigm_name: str, topk: int, cell: Mapping,
                  student_codes=None, config_hash: str | None = None,
                  precision_at=DEFAULT_PRECISION_AT) -> dict:
    """Evaluate one cell; returns the JSON-ready result (see module docstring)."""
    return evaluate_cell_per_query(split_path, teacher_codes, paradigm_name, topk, cell, student_codes,
                                   config_hash, precision_at)[0]


def evaluate_cell_per_query(split_path, teacher_codes, paradigm_name: str, topk: int, cell: Mapping,
                            student_codes=None, config_hash: str | None = None,
                            precision_at=DEFAULT_PRECISION_AT) -> tuple[dict, dict]:
    """:func:`evaluate_cell` and its per-query table: ``{"index": query dataset indices, "ap@K": ..., ...}``."""
    return evaluate_paradigms(split_path, teacher_codes, [paradigm_name], topk, cell, [student_codes], config_hash,
                              precision_at)[0]


def paradigms_of(names: Sequence[str]) -> list[Paradigm]:
    """The paradigms one call evaluates: each named once, all of a teacher cell or all of a student cell."""
    names = list(names)
    if not names:
        raise ConfigError("--paradigm: name at least one paradigm")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"--paradigm names {', '.join(repeated)} more than once; name each paradigm once")
    paradigms = [PARADIGMS.get(name) for name in names]
    if len({paradigm.needs_student for paradigm in paradigms}) > 1:
        raise ConfigError(
            f"--paradigm {' '.join(names)}: paradigm teacher evaluates a teacher cell, sym and asym a student "
            "cell; evaluate them in separate calls"
        )
    return paradigms


@dataclass(frozen=True)
class ModelRun:
    """One model run of an evaluation call: its cell (:func:`parse_cell`), the teacher's code file, the
    student's code file of each paradigm of the call, in order (None for paradigm teacher), and the
    config hash the evaluated code file must carry (None: not checked)."""

    cell: Mapping
    teacher_codes: str
    student_codes: Sequence[str | None]
    config_hash: str | None = None


def evaluate_paradigms(split_path, teacher_codes, paradigm_names: Sequence[str], topk: int, cell: Mapping,
                       student_codes: Sequence | None = None, config_hash: str | None = None,
                       precision_at=DEFAULT_PRECISION_AT) -> list[tuple[dict, dict]]:
    """:func:`evaluate_cell_per_query` of one cell in each of ``paradigm_names``, in order: :func:`evaluate_runs`
    of one run. ``student_codes``: one path (or None) per paradigm, in the same order."""
    students = [None] * len(paradigm_names) if student_codes is None else list(student_codes)
    run = ModelRun(cell, str(teacher_codes), students, config_hash)
    return evaluate_runs(split_path, [run], paradigm_names, topk, precision_at)[0]


def evaluate_runs(split_path, runs: Sequence[ModelRun], paradigm_names: Sequence[str], topk: int,
                  precision_at=DEFAULT_PRECISION_AT) -> list[list[tuple[dict, dict]]]:
    """Every run in each of ``paradigm_names``: per run, per paradigm in order, the result and per-query
    table of :func:`evaluate_cell_per_query`, the same as a call for that run alone gives. The split is
    read once and every code file once (a teacher's codes serve every run of its seed). All inputs of
    all runs are checked before any search, so a bad one fails the call before any work."""
    from brcd.data.splits import Splits
    from brcd.io import read_parquet_metadata

    names = list(paradigm_names)
    paradigms = paradigms_of(names)
    if not runs:
        raise ConfigError("--cell: name at least one run")
    if topk < 1:
        raise ConfigError(f"--topk must be a positive integer; got {topk}")
    metadata_of: dict[str, dict] = {}

    def read_metadata(path: str) -> dict:
        if path not in metadata_of:
            metadata_of[path] = read_parquet_metadata(path)
        return metadata_of[path]

    inputs = [_run_inputs(run, names, paradigms, read_metadata) for run in runs]
    splits = Splits(split_path)
    for run, checked in zip(runs, inputs):
        for paths, metadata in checked:
            check_split(splits, run.cell, metadata, paths)
    n_database = len(splits.indices["database"])
    if topk > n_database:
        raise ConfigError(
            f"--topk {topk} is larger than the database of {split_path} ({n_database} images); "
            f"lower `datasets.{runs[0].cell['dataset']}.topk` to at most {n_database}"
        )
    files = dict.fromkeys(path for checked in inputs for paths, _ in checked for path in paths.values())
    codes_of = {path: load_split_codes(path, splits) for path in files}  # each once (a seed's teacher codes)
    results = []
    for run, checked in zip(runs, inputs):
        if len(runs) > 1:
            log.info("%s, seed %s:", "/".join(str(run.cell[key]) for key in ("kd", "variant") if run.cell.get(key))
                     or "teacher", run.cell["seed"])
        results.append([_evaluate_paradigm(name, paradigm, paths, metadata,
                                           {role: codes_of[path] for role, path in paths.items()}, splits,
                                           split_path, topk, run.cell, precision_at)
                        for name, paradigm, (paths, metadata) in zip(names, paradigms, checked)])
    return results


def _run_inputs(run: ModelRun, names: Sequence[str], paradigms: Sequence[Paradigm],
                read_metadata) -> list[tuple[dict, dict]]:
    """Per paradigm of ``run``: its code files by role and their metadata by role (:func:`check_inputs`)."""
    students = list(run.student_codes)
    if len(students) != len(names):
        raise ConfigError(
            f"--student-codes: {len(students)} files for {len(names)} paradigms ({' '.join(names)}); "
            "give one per --paradigm, in the same order"
        )
    inputs = []
    for name, paradigm, student in zip(names, paradigms, students):
        paths = {"teacher": str(run.teacher_codes)}
        if paradigm.needs_student:
            if student is None:
                raise ConfigError(f"paradigm {name!r} needs --student-codes")
            paths["student"] = str(student)
        elif student is not None:
            log.warning("paradigm %s reads teacher codes only; ignoring --student-codes %s", name, student)
        inputs.append((paths, check_inputs(run.cell, paradigm, paths, run.config_hash, read_metadata)))
    return inputs


def _evaluate_paradigm(paradigm_name: str, paradigm: Paradigm, paths: Mapping[str, str], metadata: Mapping[str, dict],
                       codes: Mapping[str, SplitCodes], splits, split_path, topk: int, cell: Mapping,
                       precision_at) -> tuple[dict, dict]:
    """One paradigm of :func:`evaluate_paradigms`, its inputs checked and read."""
    from brcd.retrieval import TIE_POLICY, isd, nra_at_k, retrieval_results, search_threads

    started = time.perf_counter()
    query, database = codes[paradigm.query], codes[paradigm.database]
    query_labels = splits.labels(query.query_index)
    database_labels = splits.labels(database.database_index)
    log.info("%s: %d queries (%s codes) x %d database (%s codes), %d bits, K = %d", paradigm_name,
             len(query.query), paradigm.query, len(database.database), paradigm.database, cell["bits"], topk)

    metrics, per_query = retrieval_results(query.query, database.database, query_labels, database_labels, topk,
                                           precision_at)
    if paradigm.needs_student:
        teacher, student = codes["teacher"], codes["student"]
        metrics["isd"] = isd(teacher.query, student.query)
        metrics[f"nra@{topk}"] = nra_at_k((teacher.query, teacher.database), (query.query, database.database), topk)

    cell_role = "student" if paradigm.needs_student else "teacher"
    result = {
        **{key: cell.get(key) for key in CELL_KEYS},
        "paradigm": paradigm_name,
        "topk": int(topk),
        "tie_policy": TIE_POLICY,
        "config_hash": metadata[cell_role].get("config_hash"),
        "metrics": metrics,
        "counts": {"queries": int(len(query.query)), "database": int(len(database.database))},
        "query_side": paradigm.query,
        "database_side": paradigm.database,
        "codes": {"teacher": paths["teacher"], "student": paths.get("student")},
        "split": str(split_path),
        "search_threads": search_threads(),
        "training": metadata[cell_role].get("training"),
        "lambda": metadata.get("student", {}).get("lambda"),  # the λ the evaluated student head was trained with
    }
    log.info("%s: mAP@%d %.4f (tie-aware %.4f), mAP(all) %.4f in %.1f s", paradigm_name, topk, metrics[f"map@{topk}"],
             metrics[f"map@{topk}_tie_aware"], metrics["map_all"], time.perf_counter() - started)
    return result, {"index": query.query_index, **per_query}


def selection_record(result: Mapping, selection: Mapping | None) -> dict | None:
    """With a student's λ selection (its method's ``selection.json``, :func:`brcd.tuning.read_selection`): how
    the λ of its method was chosen, and whether the evaluated head's λ (``result["lambda"]``) is the one
    selected for this paradigm."""
    from brcd.lambdas import format_lambda

    if result["student"] is None or selection is None:
        return None
    lam = result["lambda"]
    entry = selection["paradigms"][result["paradigm"]]
    return {
        "tuning_seed": selection["tuning_seed"], "grid": selection["grid"], "selected": entry["lambda"],
        "criterion": entry["criterion"], "candidates": entry["candidates"],
        "is_selected": lam is not None and format_lambda(lam) == format_lambda(entry["lambda"]),
    }


def write_per_query(path, per_query: Mapping[str, np.ndarray], result: Mapping) -> None:
    """The per-query Parquet file of an evaluation; metadata: its cell, paradigm, K and config hash."""
    import pyarrow as pa

    from brcd.io import write_parquet

    table = pa.table({name: np.asarray(values) for name, values in per_query.items()})
    keys = (*CELL_KEYS, "paradigm", "topk", "tie_policy", "config_hash")
    write_parquet(path, table, {key: result[key] for key in keys})


def read_per_query(path, expected: Mapping) -> dict[str, np.ndarray]:
    """Columns of a per-query file, after checking its metadata against ``expected``."""
    from brcd.io import check_metadata, read_parquet, rebuild_hint

    table, metadata = read_parquet(path)
    check_metadata(metadata, expected, f"per-query file {path}",
                   f"It belongs to another cell or config; {rebuild_hint(path)}.")
    return {name: table.column(name).to_numpy() for name in table.column_names}


# --------------------------------------------------------------------------- CLI


def configure_parser(parser) -> None:
    parser.add_argument("--split", required=True, help="results/{dataset}/split.parquet")
    parser.add_argument("--teacher-codes", required=True, nargs="+", metavar="PATH",
                        help="the teacher's codes.parquet, one per seed= of --cell, in the same order")
    parser.add_argument("--student-codes", nargs="+", metavar="PATH",
                        help="the student's codes (paradigms sym, asym), one per run and --paradigm (run-major: "
                             "every paradigm of the first run, then of the next): codes.parquet for sym, "
                             "codes_asym.parquet for asym")
    parser.add_argument("--paradigm", nargs="+", required=True, metavar="PARADIGM",
                        help=f"one or more of: {', '.join(PARADIGMS.names())} (teacher alone, or sym and/or asym "
                             "of student cells: the split and each code file are read once)")
    parser.add_argument("--topk", required=True, type=positive_int, help="K of mAP@K and NRA@K")
    parser.add_argument("--cell", nargs="+", required=True, metavar="KEY=VALUE",
                        help="the cell: dataset= bits= hash= teacher= seed= (and student= kd= variant= for student "
                             "cells). seed= and variant= may be repeated to evaluate several runs of one model in "
                             "one call, one per seed and variant (seed-major), e.g. variant=lambda0.5 "
                             "variant=lambda2 (the λ candidates of a method) or seed=1 seed=2 (its selected runs); "
                             "each run's files are those a call of its own writes")
    parser.add_argument("--selection", help="the method's selection.json (student cells): recorded in every output")
    parser.add_argument("--config-hash", nargs="+", metavar="HASH",
                        help="expected config hash of each run's evaluated code file, one per run (--cell order)")
    parser.add_argument("--precision-at", nargs="+", type=positive_int, default=list(DEFAULT_PRECISION_AT),
                        metavar="K", help="cut-offs of precision@k (K is always added)")
    parser.add_argument("--threads", type=positive_int,
                        help="search threads (default: OMP_NUM_THREADS or all cores; Snakemake: the job's threads)")
    parser.add_argument("--out", nargs="+", required=True, metavar="PATH",
                        help="metrics/{paradigm}.json, one per run and --paradigm, run-major (every --paradigm of "
                             "the first run, then of the next; runs in --cell order)")
    parser.add_argument("--out-queries", nargs="+", metavar="PATH",
                        help="per-query values, one per --out, in the same order "
                             "(default: metrics/{paradigm}.queries.parquet beside each --out)")


def check_counts(args, runs: int, seeds: int) -> None:
    """One --teacher-codes per seed of --cell, one --config-hash per run, and one --out, --out-queries and
    --student-codes per run and paradigm."""
    plural = lambda n, word: f"{n} {word}{'s' if n > 1 else ''}"  # noqa: E731
    per_output = f"{plural(len(args.paradigm), 'paradigm')} ({' '.join(args.paradigm)})"
    advice = "give one per --paradigm, in the same order"
    if runs > 1:
        per_output = f"{runs} runs x {per_output}"
        advice = ("give one per run and --paradigm: every --paradigm of the first run, then of the next (runs in "
                  "--cell order, seed-major)")
    counts = [("--teacher-codes", args.teacher_codes, seeds, plural(seeds, "seed") + " of --cell",
               "give one per seed=, in the same order"),
              ("--config-hash", args.config_hash, runs, plural(runs, "run"), "give one per run, in --cell order"),
              *((flag, values, runs * len(args.paradigm), per_output, advice)
                for flag, values in (("--out", args.out), ("--out-queries", args.out_queries),
                                     ("--student-codes", args.student_codes)))]
    for flag, values, count, unit, how in counts:
        if values is not None and len(values) != count:
            raise ConfigError(f"{flag}: {len(values)} given for {unit}; {how}")


def run(args) -> None:
    from brcd.io import write_json
    from brcd.retrieval.hamming import set_search_threads
    from brcd.tuning import METHOD_KEYS, read_selection

    paradigms = paradigms_of(args.paradigm)
    cells = parse_cells(args.cell, paradigms[0], args.paradigm[0])  # all paradigms are of one role (paradigms_of)
    seeds = list(dict.fromkeys(cell["seed"] for cell in cells))
    check_counts(args, len(cells), len(seeds))
    if args.threads:
        set_search_threads(args.threads)
    selection = None
    if args.selection and paradigms[0].needs_student:  # every run is of one method (parse_cells)
        selection = read_selection(args.selection, {key: cells[0][key] for key in METHOD_KEYS})
    teacher_codes = dict(zip(seeds, args.teacher_codes))
    width = len(args.paradigm)
    students = args.student_codes or [None] * (len(cells) * width)
    hashes = args.config_hash or [None] * len(cells)
    runs = [ModelRun(cell, teacher_codes[cell["seed"]], students[i * width:(i + 1) * width], hashes[i])
            for i, cell in enumerate(cells)]
    evaluated = [item for results in evaluate_runs(args.split, runs, args.paradigm, args.topk, args.precision_at)
                 for item in results]
    queries = args.out_queries or [per_query_path(out) for out in args.out]
    for out, queries_path, (result, per_query) in zip(args.out, queries, evaluated):
        result["per_query"] = str(queries_path)
        result["selection"] = selection_record(result, selection)
        write_per_query(queries_path, per_query, result)
        write_json(Path(out), result)
        log.info("-> %s, %s", out, queries_path)
