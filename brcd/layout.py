"""The result layout (SPEC §9): every path a rule writes, and the rule that writes it.

This module is the one definition of where things live. The Snakemake rules
(``workflow/rules/*.smk``), the stages, the report and the error hints all ask
it: :data:`SPLIT` ... :data:`REPORT_FINDINGS` are the path templates,
:func:`written_by` says which rule writes a given path and which of its
outputs holds it (for "rebuild it with ..." hints), :func:`evaluate_rule`
which rule writes a paradigm's metrics, and the ``*_path`` helpers derive the
files that sit beside another. It imports nothing from the rest of ``brcd``:
it is pure vocabulary.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, NamedTuple

SPLIT = "results/{dataset}/split.parquet"
#: what checks of input files remember between runs (e.g. an image archive already verified, brcd.data.imagefolder)
CACHE_DIR = "results/.cache"
FEATURES = "results/{dataset}/features/{backbone}"
TEACHER_DIR = "results/{dataset}/{bits}/teacher/{hash}/{teacher}/seed{seed}"
CLUSTERS = "results/{dataset}/{bits}/clusters/{hash}/{teacher}/seed{seed}/clusters.parquet"
STUDENT_DIR = "results/{dataset}/{bits}/student/{hash}/{teacher}/{student}/{kd}/{variant}/seed{seed}"
#: the λ chosen per paradigm for one method, from the tuning seed's candidates (brcd.tuning)
SELECTION = "results/{dataset}/{bits}/student/{hash}/{teacher}/{student}/{kd}/selection.json"
TEACHER_MODEL = TEACHER_DIR + "/model.pt"
TEACHER_HISTORY = TEACHER_DIR + "/history.tsv"
TEACHER_CODES = TEACHER_DIR + "/codes.parquet"
#: bank mode: the teacher head's logits of every stored training view and rotation, read by its students
TEACHER_LOGITS = TEACHER_DIR + "/teacher_logits.npz"
STUDENT_MODEL = STUDENT_DIR + "/model.pt"
STUDENT_HISTORY = STUDENT_DIR + "/history.tsv"
STUDENT_CODES = STUDENT_DIR + "/codes.parquet"
STUDENT_CODES_ASYM = STUDENT_DIR + "/codes_asym.parquet"
#: any model's metrics; {model} is teacher/{hash}/{teacher} or student/{hash}/{teacher}/{student}/{kd}/{variant}
METRICS = "results/{dataset}/{bits}/{model}/seed{seed}/metrics/{paradigm}.json"
#: the per-query values behind a metrics file (:func:`per_query_path`)
PER_QUERY = "results/{dataset}/{bits}/{model}/seed{seed}/metrics/{paradigm}.queries.parquet"
#: a student run's metrics and per-query files: :data:`METRICS` and :data:`PER_QUERY` with the student's
#: {model} spelled out (the rules that evaluate several runs of one method fill in {variant} and {seed})
STUDENT_METRICS = STUDENT_DIR + "/metrics/{paradigm}.json"
STUDENT_PER_QUERY = STUDENT_DIR + "/metrics/{paradigm}.queries.parquet"
TIMING_ENCODER = "results/timing/encoder/{dataset}/{backbone}.json"
TIMING_SEARCH = "results/timing/search/{bits}.json"
REPORT = "reports/{name}.md"
#: the tidy results table the report is rendered from (:func:`table_path_for`)
REPORT_TABLE = "reports/{name}.parquet"
#: the report's findings, one row per statement (:func:`findings_path_for`)
REPORT_FINDINGS = "reports/{name}.findings.parquet"
#: every Snakemake run of the grid in this folder, one JSON record a line: its start, its end, how it
#: ended, the machine (brcd.runs; the report's header shows each run's span)
RUNS = "results/.runs.jsonl"
#: Snakemake's benchmark file of each rule's jobs (wall time, memory, CPU time of the job): the
#: report's time-per-stage table reads those of the grid's jobs (brcd.workflow.benchmark_files)
BENCHMARKS = {
    "split": "logs/split/{dataset}.bench.tsv",
    "features": "logs/features/{dataset}/{backbone}.bench.tsv",
    "train_teacher": "logs/train_teacher/{dataset}/{bits}/{hash}/{teacher}/seed{seed}.bench.tsv",
    "encode_teacher": "logs/encode_teacher/{dataset}/{bits}/{hash}/{teacher}/seed{seed}.bench.tsv",
    "evaluate_teacher": "logs/evaluate_teacher/{dataset}/{bits}/{model}/seed{seed}.bench.tsv",
    "cluster": "logs/cluster/{dataset}/{bits}/{hash}/{teacher}/seed{seed}.bench.tsv",
    "train_candidates": "logs/train_candidates/{dataset}/{bits}/{hash}/{teacher}/{student}/{kd}/seed{seed}.bench.tsv",
    "select_lambda": "logs/select_lambda/{dataset}/{bits}/{hash}/{teacher}/{student}/{kd}.bench.tsv",
    # one job per method trains all its seeds of the selected λ
    "train_student": "logs/train_student/{dataset}/{bits}/{hash}/{teacher}/{student}/{kd}/selected.bench.tsv",
    # one job per student training job: a method's λ candidates of one seed, its seeds of the selected λ
    "evaluate_candidates": "logs/evaluate_candidates/{dataset}/{bits}/{hash}/{teacher}/{student}/{kd}/seed{seed}.bench.tsv",
    "evaluate_selected": "logs/evaluate_selected/{dataset}/{bits}/{hash}/{teacher}/{student}/{kd}/selected.bench.tsv",
    "time_encoder": "logs/time_encoder/{dataset}/{backbone}.bench.tsv",
    "time_search": "logs/time_search/{bits}.bench.tsv",
}


def evaluate_rule(paradigm: str | None, variant: str | None = None) -> str:
    """The rule that writes a metrics file of ``paradigm`` (and its per-query file) of a run of ``variant``:
    ``evaluate_teacher`` for a teacher cell; for a student run, the job that evaluates every paradigm of
    its method's runs that one training job wrote: ``evaluate_candidates`` (rules ``evaluate_candidates*``,
    the λ candidates of one seed) or ``evaluate_selected`` (the seeds of the selected λ)."""
    if paradigm == "teacher":
        return "evaluate_teacher"
    return "evaluate_selected" if variant == "selected" else "evaluate_candidates"


def _student_rule(fields: dict) -> str:
    """A λ candidate's files come from its method's candidates job (rules ``train_candidates*``), a
    ``selected`` run's from ``train_student``."""
    return "train_student" if fields["variant"] == "selected" else "train_candidates"


def _evaluation_rule(fields: dict) -> str:
    """:func:`evaluate_rule` of a metrics or per-query path (its {model} ends in the student's variant)."""
    return evaluate_rule(fields["paradigm"], fields["model"].rsplit("/", 1)[-1])


#: every file (or folder) a rule writes: its template -> the rule, or a function of the template's
#: fields giving the rule. A file inside a folder output (a feature bank's) is written by the folder's rule.
WRITTEN_BY: dict[str, str | Callable[[dict], str]] = {
    SPLIT: "split",
    FEATURES: "features",
    TEACHER_MODEL: "train_teacher",
    TEACHER_HISTORY: "train_teacher",
    TEACHER_CODES: "encode_teacher",
    TEACHER_LOGITS: "encode_teacher",
    CLUSTERS: "cluster",
    SELECTION: "select_lambda",
    # a student's codes come from its training job, which encodes with the heads it holds
    STUDENT_MODEL: _student_rule,
    STUDENT_HISTORY: _student_rule,
    STUDENT_CODES: _student_rule,
    STUDENT_CODES_ASYM: _student_rule,
    METRICS: _evaluation_rule,
    PER_QUERY: _evaluation_rule,
    TIMING_ENCODER: "time_encoder",
    TIMING_SEARCH: "time_search",
    REPORT: "report",
    REPORT_TABLE: "report",
    REPORT_FINDINGS: "report",
}
#: the outputs that are folders: a path inside one belongs to it
FOLDER_OUTPUTS = (FEATURES,)


class Output(NamedTuple):
    """The rule that writes a path, and the output of that rule which is or holds the path (the target
    to name to Snakemake)."""

    rule: str
    target: str


def _pattern(template: str, inside: bool) -> re.Pattern:
    """``template`` as a regex matching a path ending in it (absolute or relative), fields captured."""
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(re.escape(part) if i % 2 == 0 else (f"(?P<{part}>.+?)" if part == "model" else f"(?P<{part}>[^/]+?)")
                    for i, part in enumerate(parts))
    return re.compile(rf"(?P<output>(?:^|.*/){regex})" + ("/[^/]+$" if inside else "$"))


def written_by(path: str | os.PathLike) -> Output | None:
    """The rule that writes ``path`` and its output holding it, by the templates of :data:`WRITTEN_BY`;
    None for a path of no template (not a file of the workflow)."""
    text = Path(path).as_posix()
    for template, rule in WRITTEN_BY.items():
        for inside in ((False, True) if template in FOLDER_OUTPUTS else (False,)):
            match = _pattern(template, inside).match(text)
            if match:
                fields = {key: value for key, value in match.groupdict().items() if key != "output"}
                return Output(rule(fields) if callable(rule) else rule, match.group("output"))
    return None


def per_query_path(metrics_path: str | os.PathLike) -> Path:
    """``metrics/{paradigm}.json`` -> ``metrics/{paradigm}.queries.parquet`` (:data:`PER_QUERY`)."""
    path = Path(metrics_path)
    return path.with_name(path.name.removesuffix(".json") + ".queries.parquet")


def table_path_for(report: str | os.PathLike) -> Path:
    """``reports/{name}.md`` -> ``reports/{name}.parquet`` (:data:`REPORT_TABLE`)."""
    return Path(report).with_suffix(".parquet")


def findings_path_for(report: str | os.PathLike) -> Path:
    """``reports/{name}.md`` -> ``reports/{name}.findings.parquet`` (:data:`REPORT_FINDINGS`)."""
    return Path(report).with_suffix(".findings.parquet")


def figures_dir_for(report: str | os.PathLike) -> Path:
    """``reports/{name}.md`` -> ``reports/{name}/``, the folder of its figures."""
    return Path(report).with_suffix("")
