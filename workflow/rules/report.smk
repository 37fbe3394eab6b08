# Stage 8: the Markdown report of the grid (SPEC §7): tables from every
# metrics file and timing file, figures beside it in reports/{name}/.
import os

REPORT_MD = cells.REPORT.format(name=config["name"])
REPORT_FIGURES = os.path.splitext(REPORT_MD)[0]


rule report:
    input:
        metrics=metrics_targets(config),
        timing=timing_targets(config),
    output:
        markdown=report(REPORT_MD, category="Report", labels={"report": config["name"]}),
        figures=report(
            directory(REPORT_FIGURES),
            patterns=["{figure}.png"],
            category="Figures",
            labels={"figure": "{figure}"},
        ),
    log:
        f"logs/report/{config['name']}.log",
    benchmark:
        f"logs/report/{config['name']}.bench.tsv"
    threads: 1
    conda:
        "../../environment.yml"
    params:
        brcd=BRCD,
        config=CONFIG_FILE,
    shell:
        "{params.brcd} report --config {params.config} --out {output.markdown} > {log} 2>&1"
