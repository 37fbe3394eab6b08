"""Helpers the Snakemake rules use (``workflow/rules/common.smk``).

Kept in the package so they are unit-testable and the ``.smk`` files stay
declarative: target lists over the grid, which inputs a cell needs, and the
config hash that makes Snakemake rerun exactly the cells whose settings changed.
"""
from __future__ import annotations

import hashlib
import os
import sys
from collections import Counter
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path
from typing import MutableMapping, Mapping, Sequence

import yaml

from brcd import cells, layout
from brcd.errors import BrcdError
from brcd.io import atomic_path, write_json
from brcd.lambdas import SELECTED, tuning_seed, variants

#: How every rule runs the CLI: the ``python3`` first on the job's PATH, which
#: :func:`prepare_job_environment` makes the interpreter running Snakemake and
#: Snakemake's conda activation (``--sdm conda``) makes the rule's environment.
#: No absolute path, so a moved or recreated environment changes no job's parameters.
BRCD_COMMAND = "python3 -m brcd"

#: The environment variable that hands jobs the effective config file (``--config $BRCD_CONFIG``).
#: Not a rule parameter: the file's name changes with every edit of the config, and an edit
#: must rerun only the jobs whose own settings (their ``settings``/``config_hash`` params) changed.
CONFIG_ENV = "BRCD_CONFIG"


def write_effective_config(config: Mapping, folder: str = "results/.config") -> str:
    """Write the validated config (defaults filled in) where the CLI can read it.

    The name holds a hash of the content, ``{folder}/{name}-{hash}.yaml``, so a
    file is never rewritten with other settings: a dry run or a run of an edited
    config writes a file of its own and cannot change what the jobs of a running
    workflow read. A file whose content was damaged is restored.
    """
    text = yaml.safe_dump(dict(config), sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = Path(folder) / f"{config['name']}-{digest}.yaml"
    if not path.exists() or path.read_text() != text:
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    return str(path)


#: Which grid's files ``results/`` holds (:func:`claim_results`), and what it may hold before a
#: grid claims it (a dry run writes its effective config there, the config check its cache of verified inputs;
#: the record of the grid's runs, brcd.runs, is written after the claim).
RESULTS_OWNER = "results/.grid.json"
UNCLAIMED = frozenset({".cache", ".config", ".grid.json", ".runs.jsonl"})


def results_owner(path: str | os.PathLike = RESULTS_OWNER) -> str | None:
    """The grid ``path`` names; None when it is missing or unreadable."""
    import json

    try:
        owner = json.loads(Path(path).read_text()).get("name")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return owner if isinstance(owner, str) else None


def claim_problem(name: str, path: str | os.PathLike = RESULTS_OWNER) -> str | None:
    """Why grid ``name`` must not run here (:func:`claim_results`), or None when it may."""
    path = Path(path)
    owner = results_owner(path)
    if owner == name:
        return None
    elsewhere = (f"run {name!r} in a working copy of its own (`git worktree add ../{name}`, then `make setup` "
                 f"there), or delete results/ first")
    record = f"""`echo '{{"name": "{name}"}}' > {path}`"""
    if owner is not None:
        return (f"results/ holds the results of grid {owner!r} ({path}); running grid {name!r} here would "
                f"rebuild and overwrite them, since every grid writes the same paths (results/{{dataset}}/...). "
                f"To keep them, {elsewhere} to discard them. If they are the results of {name!r} under an old "
                f"name, run {record} and rerun.")
    held = sorted(p.name for p in path.parent.iterdir() if p.name not in UNCLAIMED) if path.parent.is_dir() else []
    if not held:
        return None
    why = "is damaged" if path.exists() else "is missing (they predate it)"
    return (f"results/ holds results ({', '.join(held[:4])}{', ...' if len(held) > 4 else ''}), but {path}, "
            f"which names the grid they belong to, {why}: running grid {name!r} here could rebuild and overwrite "
            f"another grid's results. If they are the results of {name!r}, run {record} and rerun; "
            f"otherwise {elsewhere}.")


def claim_results(name: str, config_file: str, path: str | os.PathLike = RESULTS_OWNER) -> None:
    """Stop grid ``name`` before any job runs where another grid's results are.

    Every grid writes the same paths (``results/{dataset}/...``, SPEC §9), so a
    second grid run in the same folder would rebuild and overwrite the first
    one's files wherever their settings differ -- for two different grids, from
    the split on, nearly all of them (the study's hours of training, after a
    ``make demo``). The first grid that runs in an empty ``results/`` claims it
    (``path`` records the grid and the config file it ran); results without
    such a record, from before it existed, stop every grid until the user says
    whose they are. A dry run claims nothing (the Snakefile warns instead).
    """
    problem = claim_problem(name, path)
    if problem:
        raise BrcdError(problem)
    if results_owner(path) != name:
        write_json(path, {"name": name, "config": str(config_file)})


def sort_config_keys(config: MutableMapping) -> MutableMapping:
    """Sort every mapping of ``config`` by key, in place.

    Snakemake compares a rule's parameters by their ``repr``, in which a dict's
    key order shows: without this, reordering the keys of a config file would
    rerun every job whose ``settings`` parameter holds a config section.
    """
    for key in sorted(config):
        value = config.pop(key)
        config[key] = sort_config_keys(value) if isinstance(value, MutableMapping) else value
    return config


def prepare_job_environment(config_file: str, environ: MutableMapping[str, str] | None = None,
                            executable: str | None = None) -> None:
    """Set what jobs inherit: :data:`CONFIG_ENV` and a PATH that starts with the
    folder of the Python running Snakemake, so that :data:`BRCD_COMMAND` runs
    this environment's ``brcd`` even when it is not activated (``make demo``
    runs ``.venv/bin/snakemake``)."""
    environ = os.environ if environ is None else environ
    folder = os.path.dirname(executable or sys.executable)
    if not os.access(os.path.join(folder, "python3"), os.X_OK):
        raise BrcdError(
            f"jobs run `{BRCD_COMMAND}`, but {folder}, the folder of the Python running Snakemake "
            f"({executable or sys.executable}), has no python3; run Snakemake from this project's environment "
            "(`.venv/bin/snakemake`, or inside the activated conda environment of environment.yml)"
        )
    entries = [entry for entry in environ.get("PATH", "").split(os.pathsep) if entry]
    if not entries or entries[0] != folder:
        environ["PATH"] = os.pathsep.join([folder, *entries])
    environ[CONFIG_ENV] = config_file


def teacher_cells(config: Mapping) -> list[cells.Cell]:
    return [cells.Cell(d, b, h, t, s) for d, b, h, t, s in
            product(config["datasets"], config["bits"], config["hash"], config["teachers"], config["seeds"])]


def student_methods(config: Mapping) -> list[cells.Cell]:
    """One student cell per method and seed, at the default variant: what a report row and a λ
    selection are about (their variant, the λ run, is chosen by :func:`student_cells`)."""
    return [cells.Cell(d, b, h, t, s, st, kd) for d, b, h, t, s, st, kd in
            product(config["datasets"], config["bits"], config["hash"], config["teachers"], config["seeds"],
                    config["students"], config["kd"])]


def student_cells(config: Mapping) -> list[cells.Cell]:
    """Every student run: each λ candidate with the tuning seed, the selected λ with the others."""
    return [replace(cell, variant=variant) for cell in student_methods(config)
            for variant in variants(config, cell.kd, cell.seed)]


def selection_targets(config: Mapping) -> list[str]:
    """One ``selection.json`` per method (seed-independent: the tuning seed decides)."""
    return list(dict.fromkeys(cell.selection_path() for cell in student_methods(config)))


def metrics_path(cell: cells.Cell, paradigm: str) -> str:
    return layout.METRICS.format(**cell.parameters(), model=cell.model, paradigm=paradigm)


def metrics_targets(config: Mapping) -> list[str]:
    """Every metrics file of the grid: teacher rows plus each student cell × paradigm."""
    teacher = [metrics_path(c, "teacher") for c in teacher_cells(config)]
    student = [metrics_path(c, p) for c in student_cells(config) for p in config["paradigms"]]
    return teacher + student


def per_query_targets(config: Mapping) -> list[str]:
    """The per-query file beside every metrics file of the grid (rule :func:`brcd.layout.evaluate_rule` writes both)."""
    return [str(layout.per_query_path(path)) for path in metrics_targets(config)]


def timing_targets(config: Mapping) -> list[str]:
    backbones = list(dict.fromkeys([*config["teachers"], *config["students"]]))
    encoders = [layout.TIMING_ENCODER.format(dataset=d, backbone=b) for d in config["datasets"] for b in backbones]
    search = [layout.TIMING_SEARCH.format(bits=b) for b in config["bits"]]
    return encoders + search


def _benchmark_items(config: Mapping) -> dict[str, list[dict]]:
    """Rule -> the wildcards of what each of its jobs in the grid handles (the rule ``report`` left out):
    one item per job, but for the student rules one per run, a job handling all runs of its method that
    share its benchmark file (the λ candidates of one seed, the seeds of the selected λ)."""
    backbones = list(dict.fromkeys([*config["teachers"], *config["students"]]))
    teachers = [{**c.parameters(), "model": c.model} for c in teacher_cells(config)]
    students = [{**c.parameters(), "model": c.model} for c in student_cells(config)]
    candidates = [c for c in students if c["variant"] != SELECTED]
    selected = [c for c in students if c["variant"] == SELECTED]
    banks = [{"dataset": d, "backbone": b} for d in config["datasets"] for b in backbones]
    return {
        "split": [{"dataset": d} for d in config["datasets"]],
        "features": banks if config["mode"] == "bank" else [],
        "train_teacher": teachers,
        "encode_teacher": teachers,
        "evaluate_teacher": teachers,
        "cluster": teachers if any(needs_clusters(kd) for kd in config["kd"]) else [],
        "train_candidates": candidates,
        "select_lambda": [c.parameters() for c in student_methods(config) if c.seed == tuning_seed(config)],
        "train_student": selected,
        "evaluate_candidates": candidates,
        "evaluate_selected": selected,
        "time_encoder": banks,
        "time_search": [{"bits": b} for b in config["bits"]],
    }


def _fill(rule: str, items) -> dict[str, int]:
    """The benchmark file of each of a rule's jobs -> how many of ``items`` the job handles."""
    return dict(Counter(layout.BENCHMARKS[rule].format(**item) for item in items))


def benchmark_jobs(config: Mapping) -> dict[str, dict[str, int]]:
    """Rule -> the Snakemake benchmark file of each of its jobs in the grid (``layout.BENCHMARKS``) -> the
    runs that job handles (1, but for a student job the runs of its method it trains or evaluates):
    the jobs ``snakemake`` runs for the grid's report; the rule ``report`` itself is left out."""
    jobs = {rule: _fill(rule, items) for rule, items in _benchmark_items(config).items()}
    return {rule: files for rule, files in jobs.items() if files}


def benchmark_files(config: Mapping) -> dict[str, list[str]]:
    """Rule -> the Snakemake benchmark file of each of its jobs in the grid (:func:`benchmark_jobs`)."""
    return {rule: list(files) for rule, files in benchmark_jobs(config).items()}


#: the rules that train students: the report splits their cost by distillation method
STUDENT_TRAINING_RULES = ("train_candidates", "train_student")


def student_training_files(config: Mapping) -> dict[str, list[str]]:
    """kd -> the benchmark files of its student-training jobs (:data:`STUDENT_TRAINING_RULES`)."""
    items = _benchmark_items(config)
    return {kd: [path for rule in STUDENT_TRAINING_RULES
                 for path in _fill(rule, [item for item in items[rule] if item["kd"] == kd])]
            for kd in config["kd"]}


def bank_path(config: Mapping, dataset: str, backbone: str) -> list[str]:
    """The feature bank a job needs: one folder in bank mode, nothing online."""
    if config["mode"] != "bank":
        return []
    return [layout.FEATURES.format(dataset=dataset, backbone=backbone)]


def teacher_encode_outputs(config: Mapping) -> dict[str, str]:
    """The files rule ``encode_teacher`` writes: the teacher's codes, and in bank mode its logits of
    every stored training view and rotation (done once per teacher, read by all its students)."""
    outputs = {"codes": layout.TEACHER_CODES}
    if config["mode"] == "bank":
        outputs["logits"] = layout.TEACHER_LOGITS
    return outputs


def student_job_inputs(config: Mapping, cell: cells.Cell, seeds: Sequence[int] | None = None) -> dict[str, list[str]]:
    """What a student job of ``cell``'s method reads, whatever its λ (rules train_candidates*,
    train_student), for each of ``seeds`` (default: the cell's): the split and, in bank mode, the
    student's bank once; per seed the teacher's checkpoint and codes, in bank mode its stored logits
    (never the teacher's bank), and the clusters where the method needs them. Every value is a list
    (empty when absent), per-seed ones in the order of ``seeds``."""
    seeds = [cell.seed] if seeds is None else seeds
    teachers = [replace(cell, seed=int(seed)).teacher_cell().parameters() for seed in seeds]
    bank = config["mode"] == "bank"
    return {
        "split": [layout.SPLIT.format(dataset=cell.dataset)],
        "student_bank": bank_path(config, cell.dataset, cell.student),
        "teacher": [layout.TEACHER_MODEL.format(**teacher) for teacher in teachers],
        "teacher_codes": [layout.TEACHER_CODES.format(**teacher) for teacher in teachers],
        "teacher_logits": [layout.TEACHER_LOGITS.format(**teacher) for teacher in teachers] if bank else [],
        "clusters": [layout.CLUSTERS.format(**teacher) for teacher in teachers] if needs_clusters(cell.kd) else [],
    }


def student_code_path(cell: cells.Cell, paradigm: str) -> str:
    """The code file of ``cell``'s head selected for ``paradigm`` (sym: codes.parquet, asym: codes_asym.parquet)."""
    return (layout.STUDENT_CODES_ASYM if paradigm == "asym" else layout.STUDENT_CODES).format(**cell.parameters())


def evaluation_job_inputs(config: Mapping, runs: Sequence[cells.Cell]) -> dict[str, list[str]]:
    """What one job evaluating ``runs`` in every paradigm of the grid reads (rules evaluate_candidates*,
    evaluate_selected: the runs of one method that one student training job wrote): the split once, the
    teacher's codes once per seed (in the order of :func:`cell_arguments`), each run's code file of each
    paradigm (run-major, paradigms in config order: the order of ``brcd evaluate``'s outputs) and, for
    ``selected`` runs, their method's λ selection (recorded in their metrics files)."""
    seeds = dict.fromkeys(run.seed for run in runs)
    return {
        "split": [layout.SPLIT.format(dataset=runs[0].dataset)],
        "teacher_codes": [layout.TEACHER_CODES.format(**replace(runs[0], seed=seed).teacher_cell().parameters())
                          for seed in seeds],
        "student_codes": [student_code_path(run, paradigm) for run in runs for paradigm in config["paradigms"]],
        "selection": list(dict.fromkeys(run.selection_path() for run in runs if run.variant == SELECTED)),
    }


def per_paradigm(templates: Sequence[str], paradigms: Sequence[str]) -> list[str]:
    """Each of ``templates`` (one per run) with its ``{paradigm}`` filled in for every paradigm, run-major:
    the outputs of a job evaluating several runs (rules evaluate_candidates*, evaluate_selected), in the
    order of ``brcd evaluate``'s --out and of :func:`evaluation_job_inputs`' student codes."""
    return [template.replace("{paradigm}", paradigm) for template in templates for paradigm in paradigms]


def cell_arguments(runs: Sequence[cells.Cell]) -> str:
    """``brcd evaluate --cell`` words naming ``runs``, runs of one model that differ only in seed and variant:
    every seed x variant, seed-major (``seed=`` and ``variant=`` once per value)."""
    seeds = list(dict.fromkeys(run.seed for run in runs))
    variants = list(dict.fromkeys(run.variant for run in runs))
    if [(run.seed, run.variant) for run in runs] != list(product(seeds, variants)) or \
            len({replace(run, seed=0, variant=None) for run in runs}) != 1:
        raise ValueError(f"runs of one model, every seed x variant, seed-major: {[run.model for run in runs]}")
    words = []
    for key, value in runs[0].parameters().items():
        values = {"seed": seeds, "variant": variants}.get(key, [value])
        words += [f"{key}={item}" for item in values]
    return " ".join(words)


def grid_student_files(config: Mapping, cell: cells.Cell, workdir: str | os.PathLike = ".") -> dict[str, list[str]]:
    """:func:`student_job_inputs` of ``cell`` under a built grid's ``workdir``, every file checked: a
    clear error naming the missing files and the command that builds them (the benchmarks' student runs
    read exactly what the workflow's job reads)."""
    from brcd.errors import DataError

    relative = student_job_inputs(config, cell)
    missing = [path for paths in relative.values() for path in paths if not (Path(workdir) / path).exists()]
    if missing:
        from brcd.io import snakemake_command

        raise DataError(f"{', '.join(missing)} not found in {workdir}: build the grid's teachers first, e.g. "
                        f"`{snakemake_command(missing[0])}` there (or all of them: add "
                        "`--until encode_teacher cluster` without the file)")
    return {name: [str(Path(workdir) / path) for path in paths] for name, paths in relative.items()}


def load_grid_student_inputs(config: Mapping, cell: cells.Cell, workdir: str | os.PathLike = ".", device="cpu"):
    """:func:`brcd.distill.train_student.load_student_inputs` from a built grid's files under ``workdir``
    (:func:`grid_student_files`)."""
    from brcd.distill.train_student import load_student_inputs

    files = grid_student_files(config, cell, workdir)
    first = lambda name: files[name][0] if files[name] else None  # noqa: E731
    return load_student_inputs(config, cell, first("split"), first("teacher"), first("student_bank"), None,
                               first("clusters"), device, first("teacher_codes"), first("teacher_logits"))


def needs_clusters(kd: str) -> bool:
    from brcd.distill import KD_LOSSES

    return KD_LOSSES.get(kd).needs_clusters


def model_cell(wildcards) -> cells.Cell:
    return cells.cell_from_model(wildcards.dataset, int(wildcards.bits), wildcards.model, int(wildcards.seed))


def option(flag: str, paths) -> str:
    """``--flag path ...`` when the (possibly empty) input is present, else nothing."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    return f"{flag} {' '.join(paths)}" if paths else ""


# --------------------------------------------------------------------------- the report's inputs


@dataclass(frozen=True)
class ReportInputs:
    """Every file the report of one grid reads (:func:`report_inputs`), keyed by what its place in
    the layout says it holds: the report checks each file against its key."""

    #: (cell, paradigm) -> metrics file: every teacher run (paradigm ``teacher``), then every student run x paradigm
    metrics: dict[tuple[cells.Cell, str], str]
    #: (cell, paradigm) -> the per-query values beside that metrics file
    per_query: dict[tuple[cells.Cell, str], str]
    #: (dataset, backbone) -> encoder timing file
    encoder_timing: dict[tuple[str, str], str]
    #: bits -> search timing file
    search_timing: dict[int, str]
    #: one student cell per method (its first seed's) -> the method's ``selection.json``
    selections: dict[cells.Cell, str]
    #: rule -> the benchmark file of each of its jobs (:func:`benchmark_files`)
    benchmarks: dict[str, list[str]]
    #: kd -> the benchmark files of its student-training jobs (:func:`student_training_files`)
    student_training: dict[str, list[str]]

    def required(self) -> list[tuple[str, str]]:
        """(path, the rule that writes it) of every file the report cannot do without. Benchmark
        files are left out: a job Snakemake did not run (or ran before they were kept) has none."""
        evaluated = [*self.metrics.items(), *self.per_query.items()]
        return [*((path, layout.evaluate_rule(paradigm, cell.variant)) for (cell, paradigm), path in evaluated),
                *((path, "time_encoder") for path in self.encoder_timing.values()),
                *((path, "time_search") for path in self.search_timing.values()),
                *((path, "select_lambda") for path in self.selections.values())]


def report_inputs(config: Mapping) -> ReportInputs:
    """Every input of the report of ``config``'s grid (``brcd report``, rule ``report``): the one
    place that derives them from the grid, so the report reads exactly these files."""
    runs = [(cell, "teacher") for cell in teacher_cells(config)]
    runs += [(cell, paradigm) for cell in student_cells(config) for paradigm in config["paradigms"]]
    metrics = {run: metrics_path(*run) for run in runs}
    backbones = list(dict.fromkeys([*config["teachers"], *config["students"]]))
    methods: dict[str, cells.Cell] = {}
    for method in student_methods(config):  # one selection per method, whatever the seed
        methods.setdefault(method.selection_path(), method)
    return ReportInputs(
        metrics=metrics,
        per_query={run: str(layout.per_query_path(path)) for run, path in metrics.items()},
        encoder_timing={(dataset, backbone): layout.TIMING_ENCODER.format(dataset=dataset, backbone=backbone)
                        for dataset in config["datasets"] for backbone in backbones},
        search_timing={int(bits): layout.TIMING_SEARCH.format(bits=bits) for bits in config["bits"]},
        selections={method: path for path, method in methods.items()},
        benchmarks=benchmark_files(config),
        student_training=student_training_files(config),
    )
