# Shared setup, loaded first: config validation, the effective config file
# the CLI reads, path templates and input helpers (all from brcd).
from snakemake.logging import logger
from snakemake.utils import min_version, validate

from brcd import cells, layout
from brcd.checks import check_config
from brcd.config import backbone_options, cluster_settings, validate_schema
import time
from dataclasses import replace

from brcd.lambdas import (SELECTED, candidate_groups, candidate_paths, format_lambda, lambda_grid, selected_paths,
                          selected_seeds, tuning_seed, variant_of)
from brcd.runs import end_run, snakemake_cores, start_run
from brcd.workflow import (
    BRCD_COMMAND,
    bank_path,
    claim_problem,
    claim_results,
    metrics_targets,
    model_cell,
    needs_clusters,
    option,
    per_query_targets,
    selection_targets,
    student_job_inputs,
    teacher_encode_outputs,
    prepare_job_environment,
    sort_config_keys,
    timing_targets,
    write_effective_config,
)

min_version("9.0")


# brcd's validator first: same schema, but its message names the offending key.
validate_schema(config, "config")
validate(config, schema="../schemas/config.schema.yaml")
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


def selection_input(cell):
    """A `selected` run reads the λ chosen on the tuning seed's candidates; candidates need nothing."""
    return [cell.selection_path()] if cell.variant == SELECTED else []


def candidate_models(w):
    """The tuning seed's model.pt of every λ candidate of one method, in grid order (rule select_lambda)."""
    method = cells.Cell(w.dataset, int(w.bits), w.hash, w.teacher, tuning_seed(config), w.student, w.kd)
    return [layout.STUDENT_MODEL.format(**replace(method, variant=variant_of(lam)).parameters())
            for lam in lambda_grid(config, w.kd)]


def cell_hash(wildcards):
    """Config hash of the cell: Snakemake reruns a cell when its settings change."""
    return model_cell(wildcards).config_hash(config)


def method_cell(w, seed=None):
    """The method of a student job's wildcards (rules train_candidates*, train_student), at ``seed``."""
    return cells.Cell(w.dataset, int(w.bits), w.hash, w.teacher, int(w.seed if seed is None else seed), w.student,
                      w.kd)


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
    """Config hashes of the runs one train_student job writes: an edit reruns the job."""
    return [replace(method_cell(w, seed), variant=SELECTED).config_hash(config) for seed in selected_seeds(config)]


def candidate_hashes(w, grid):
    """Config hashes of the candidates one train_candidates job writes: an edit reruns the job."""
    return [replace(method_cell(w), variant=variant_of(lam)).config_hash(config) for lam in grid]


def evaluate_inputs(w):
    cell = model_cell(w)
    inputs = {
        "split": layout.SPLIT.format(dataset=w.dataset),
        "teacher_codes": layout.TEACHER_CODES.format(**cell.teacher_cell().parameters()),
    }
    if cell.role == "student":
        # for rule evaluate, the code file of each paradigm of the grid (its head), in config order
        inputs["student_codes"] = [
            (layout.STUDENT_CODES_ASYM if paradigm == "asym" else layout.STUDENT_CODES).format(**cell.parameters())
            for paradigm in config["paradigms"]
        ]
        # a selected run's metrics file records the choice (λ and every candidate's validation score);
        # candidates need no selection, so naming one builds only that cell
        inputs["selection"] = selection_input(cell)
    return inputs
