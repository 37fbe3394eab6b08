# Shared setup, loaded first: config validation, the effective config file
# the CLI reads, path templates and input helpers (all from brcd).
import sys

from snakemake.utils import min_version, validate

from brcd import cells
from brcd.cluster import cluster_settings
from brcd.config import check_config, validate_schema
from brcd.workflow import (
    bank_path,
    metrics_targets,
    model_cell,
    needs_clusters,
    option,
    timing_targets,
    write_effective_config,
)

min_version("9.0")


# brcd's validator first: same schema, but its message names the offending key.
validate_schema(config, "config")
validate(config, schema="../schemas/config.schema.yaml")
check_config(config, "config")

# All jobs hand the CLI this one file (the validated config with defaults,
# including any `--config key=value` overrides); rewritten only when it changes.
CONFIG_FILE = write_effective_config(config)

# The brcd CLI of the Python environment running Snakemake (no PATH assumptions).
BRCD = f"{sys.executable} -m brcd"

# Paths of cells and their files (SPEC §9) are defined once, in brcd.cells.


def teacher_cell(w):
    return cells.Cell(w.dataset, int(w.bits), w.hash, w.teacher, int(w.seed))


def student_cell(w):
    return cells.Cell(w.dataset, int(w.bits), w.hash, w.teacher, int(w.seed), w.student, w.kd)


def cell_hash(wildcards):
    """Config hash of the cell: Snakemake reruns a cell when its settings change."""
    return model_cell(wildcards).config_hash(config)


def student_inputs(w):
    inputs = {
        "split": cells.SPLIT.format(dataset=w.dataset),
        "teacher": cells.TEACHER_MODEL.format(**w),
        "student_bank": bank_path(config, w.dataset, w.student),
        "teacher_bank": bank_path(config, w.dataset, w.teacher),
        "clusters": [],
    }
    if needs_clusters(w.kd):
        inputs["clusters"] = [cells.CLUSTERS.format(**w)]
    return inputs


def evaluate_inputs(w):
    cell = model_cell(w)
    inputs = {
        "split": cells.SPLIT.format(dataset=w.dataset),
        "teacher_codes": cells.TEACHER_CODES.format(**cell.teacher_cell().parameters()),
    }
    if cell.role == "student":
        codes = cells.STUDENT_CODES_ASYM if w.paradigm == "asym" else cells.STUDENT_CODES
        inputs["student_codes"] = codes.format(**cell.parameters())
    return inputs
