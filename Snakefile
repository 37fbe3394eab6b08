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
    bits=r"\d+",
    seed=r"\d+",
    hash="[^/]+",
    teacher="[^/]+",
    student="[^/]+",
    kd="[^/]+",
    variant=r"lambda[0-9.e+-]+|selected",
    backbone="[^/]+",


include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/cluster.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/timing.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        metrics_targets(config),
        timing_targets(config),
        cells.REPORT.format(name=config["name"]),
    default_target: True
