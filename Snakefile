# BRCD benchmark workflow. All logic lives in the `brcd` package; the rules in
# workflow/rules/*.smk are thin wrappers over its command line.
#   snakemake --cores 2 --configfile config/demo.yaml
# Without --configfile the embedded demo runs. (A `configfile:` directive would
# be merged with --configfile, mixing two grids, hence the guard.)
if not config:

    configfile: "config/demo.yaml"


# Software: every rule has `conda: "../../environment.yml"`, the project's one
# documented environment (the same packages as `make setup`'s .venv). Decision:
# per-rule directives, not none: `snakemake --lint` (run by `make test`) asks
# every rule for a conda environment or container, and a global `conda:`
# directive does not answer it (it only injects an environment into Snakemake's
# own process, under --sdm conda). Without --sdm conda, jobs use the environment
# that runs Snakemake; with it, each job runs in the environment Snakemake builds
# from environment.yml, which therefore does not install brcd: jobs import it
# from the working directory (the repository root; see environment.yml).
# Not tested here (no conda on the test machines); the lint test checks the
# directives are there.

# The description at the top of `snakemake --report report.html`; every reported
# output has its own caption in workflow/report/ (rule report, report.smk).
report: "workflow/report/workflow.rst"


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
        layout.REPORT.format(name=config["name"]),
    default_target: True
