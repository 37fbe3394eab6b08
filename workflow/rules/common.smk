# Shared setup, loaded first: config validation, the effective config file
# the CLI reads, path templates and input helpers (all from brcd).
import sys

from snakemake.utils import min_version, validate

from brcd import cells
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

# Cell directories and files (SPEC §9), one definition in brcd.cells.
MODEL_DIR = "results/{dataset}/{bits}/{model}/seed{seed}"
TEACHER_DIR = cells.TEACHER_DIR
STUDENT_DIR = cells.STUDENT_DIR


def model_bank(wildcards):
    cell = model_cell(wildcards)
    return bank_path(config, cell.dataset, cell.backbone)


def cell_hash(wildcards):
    """Config hash of the cell: Snakemake reruns a cell when its settings change."""
    return model_cell(wildcards).config_hash(config)
