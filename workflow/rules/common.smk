# Shared setup, loaded first: config validation, the effective config file
# the CLI reads, path templates and input helpers (all from brcd).
from snakemake.logging import logger
from snakemake.utils import min_version, validate

from brcd import cells, layout
from brcd.checks import check_config
from brcd.config import backbone_options, cluster_settings, validate_schema
import time
from dataclasses import replace

from brcd.lambdas import (SELECTED, candidate_groups, candidate_lambda, candidate_paths, format_lambda, lambda_grid,
                          selected_paths, selected_seeds, tuning_seed, variant_of)
from brcd.runs import end_run, snakemake_cores, start_run
from brcd.scheduler import coalesce_reevaluations
from brcd.tuning import PARADIGM_HEADS
from brcd.workflow import (
    BRCD_COMMAND,
    bank_path,
    cell_arguments,
    claim_problem,
    claim_results,
    evaluation_job_inputs,
    metrics_targets,
    model_cell,
    needs_clusters,
    option,
    per_paradigm,
    per_query_targets,
    selection_targets,
    student_code_path,
    student_job_inputs,
    teacher_encode_outputs,
    prepare_job_environment,
    sort_config_keys,
    timing_targets,
    write_effective_config,
)

min_version("9.0")

# Snakemake starts one more scheduler re-evaluation timer with every pass, so over a grid's
# hundreds of jobs its own process takes a growing share of a core from the jobs; keep one
# timer pending at a time (brcd.scheduler, which says why this is safe).
coalesce_reevaluations()


# brcd's validator first: same schema, but its message names the offending key.
validate_schema(config, "config")
validate(config, schema="../schemas/config.schema.yaml")
# Also in a job's own Snakemake (a Slurm job's parse): besides checking, it types the
# values the jobs read (kd_settings, dataset entries) as the main process did.
check_config(config, "config")
# Rules' `settings` params hold config sections, compared by repr: with every
# mapping sorted, reordering the keys of a config file reruns nothing.
sort_config_keys(config)

# All jobs hand the CLI this one file (the validated config with defaults,
# including any `--config key=value` overrides), results/.config/{name}-{hash}.yaml:
# named by its content, so it is never rewritten with other settings (a dry run
# of an edited config cannot change what running jobs read). Jobs get its path in
# $BRCD_CONFIG, not as a parameter of their rules, because the name changes with
# every edit, and an edit must rerun only the jobs whose own `settings` or
# `config_hash` parameters changed.
CONFIG_FILE = write_effective_config(config)


# Every grid writes the same results/ paths: before any job runs, refuse to
# rebuild (overwrite) another grid's results here (brcd.workflow.claim_results).
# Then record the run's start in results/.runs.jsonl, and its end when Snakemake
# gets there (completed, failed or interrupted; a killed run records none and the
# report infers its end from the files its jobs wrote: brcd.runs). Snakemake calls
# none of these handlers in a dry run or a run with nothing to do.
# A run starts when Snakemake reads the workflow (planning the jobs is part of its span).
_RUN = {"started": time.time()}


onstart:
    claim_results(config["name"], CONFIG_FILE)
    _RUN["id"] = start_run(snakemake_cores(workflow), log, _RUN["started"])


onsuccess:
    end_run(_RUN.get("id"), True, log)


onerror:
    end_run(_RUN.get("id"), False, log)


_claim_problem = claim_problem(config["name"])  # said at parse time too, so that a dry run says it
if _claim_problem:
    logger.warning(f"A run of this grid (not a dry run) stops before its first job: {_claim_problem}")

# Jobs run `python3 -m brcd` with the python3 first on their PATH, which is the
# interpreter running Snakemake (its folder is put first on PATH here, so
# .venv/bin/snakemake works without activating .venv), or under `--sdm conda` the
# conda environment Snakemake activates inside the job. No interpreter path in
# the jobs' parameters, so moving or recreating the environment reruns nothing.
prepare_job_environment(CONFIG_FILE)
BRCD = BRCD_COMMAND

# Paths of cells and their files (SPEC §9) are defined once, in brcd.layout.


def teacher_cell(w):
    return cells.Cell(w.dataset, int(w.bits), w.hash, w.teacher, int(w.seed))


def cell_hash(wildcards):
    """Config hash of the cell: Snakemake reruns a cell when its settings change."""
    return model_cell(wildcards).config_hash(config)


def method_cell(w, seed=None):
    """The method of a student job's wildcards (rules train_candidates*, train_student, evaluate_candidates*,
    evaluate_selected, select_lambda), at ``seed``."""
    return cells.Cell(w.dataset, int(w.bits), w.hash, w.teacher, int(w.seed if seed is None else seed), w.student,
                      w.kd)


def candidate_runs(w, seed=None):
    """The λ candidates of a candidates job's method and seed (default: the wildcards'), in grid order
    (rules train_candidates*, evaluate_candidates*; at the tuning seed, select_lambda)."""
    return [replace(method_cell(w, seed), variant=variant_of(lam)) for lam in lambda_grid(config, w.kd)]


def selected_runs(w):
    """The runs of a method's selected λ, one per seed but the tuning seed (rules train_student, evaluate_selected)."""
    return [replace(method_cell(w, seed), variant=SELECTED) for seed in selected_seeds(config)]


def candidate_inputs(w):
    """What the λ candidates of one method and seed read (rules train_candidates*)."""
    return student_job_inputs(config, method_cell(w))


def selected_inputs(w):
    """What the seeds of a method's selected λ read (the train_student rule), each seed's teacher files
    and the λ chosen on the tuning seed's candidates."""
    method = method_cell(w, seed=tuning_seed(config))
    return {**student_job_inputs(config, method, selected_seeds(config)),
            "selection": [layout.SELECTION.format(**method.parameters())]}


def selected_hashes(w):
    """Config hashes of the runs one train_student or evaluate_selected job handles: an edit reruns the job."""
    return [run.config_hash(config) for run in selected_runs(w)]


def candidate_hashes(w):
    """Config hashes of the candidates one train_candidates or evaluate_candidates job handles: an edit reruns
    the job."""
    return [run.config_hash(config) for run in candidate_runs(w)]


def selection_candidates(w):
    """(λ, code file) of the head each λ candidate of the tuning seed selected for each paradigm, in grid
    order, for select_lambda (the validation mAP of each head is in its code file's metadata)."""
    return [(candidate_lambda(run.variant), student_code_path(run, head)) for run in
            candidate_runs(w, tuning_seed(config)) for head in PARADIGM_HEADS]


def teacher_evaluation_inputs(w):
    """The split and the teacher's codes, which evaluate_teacher reads."""
    cell = model_cell(w)
    return {
        "split": layout.SPLIT.format(dataset=w.dataset),
        "teacher_codes": layout.TEACHER_CODES.format(**cell.teacher_cell().parameters()),
    }
