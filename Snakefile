# BRCD benchmark workflow. All logic lives in the `brcd` package; the rules in
# workflow/rules/*.smk are thin wrappers over its command line.
#   snakemake --cores 2 --configfile config/demo.yaml
# Without --configfile the embedded demo runs. (A `configfile:` directive would
# be merged with --configfile, mixing two grids, hence the guard.)
if not config:

    configfile: "config/demo.yaml"



include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset="|".join(config["datasets"]),


include: "workflow/rules/data.smk"


rule all:
    input:
        all_targets(),
    default_target: True
