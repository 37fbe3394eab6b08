# Shared setup: config validation, the effective config file the CLI reads,
# and target lists. Loaded first by the Snakefile.
import sys

from snakemake.utils import min_version, validate

from brcd.config import check_config
from brcd.workflow import write_effective_config

min_version("9.0")


validate(config, schema="../schemas/config.schema.yaml")
check_config(config, "config")

# All jobs hand the CLI this one file (the validated config with defaults,
# including any `--config key=value` overrides); rewritten only when it changes.
CONFIG_FILE = write_effective_config(config)

# The brcd CLI of the Python environment running Snakemake (no PATH assumptions).
BRCD = f"{sys.executable} -m brcd"


def all_targets():
    return expand("results/{dataset}/split.parquet", dataset=config["datasets"])
