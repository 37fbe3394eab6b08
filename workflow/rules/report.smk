# Stage 8: the Markdown report of the grid (SPEC §7): tables and statistics from
# every metrics file, its per-query values and the timing files; figures beside
# it in reports/{name}/, the tidy results table in reports/{name}.parquet and
# the findings, one row per statement, in reports/{name}.findings.parquet.
import os

REPORT_MD = cells.REPORT.format(name=config["name"])
REPORT_FIGURES = os.path.splitext(REPORT_MD)[0]


rule report:
    input:
        metrics=metrics_targets(config),
        queries=per_query_targets(config),
        selections=selection_targets(config),
        timing=timing_targets(config),
    output:
        markdown=report(REPORT_MD, category="Report", labels={"report": config["name"]}),
        table=cells.REPORT_TABLE.format(name=config["name"]),
        findings=cells.REPORT_FINDINGS.format(name=config["name"]),
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
        # what the report shows besides its inputs: a changed description or grid redraws it
        settings={key: config.get(key) for key in ("description", "seeds", "lambda", "kd_settings")},
    shell:
        "{params.brcd} report --config $BRCD_CONFIG --out {output.markdown} > {log} 2>&1"
