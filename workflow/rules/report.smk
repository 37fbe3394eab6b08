# Stage 8: the Markdown report of the grid (SPEC §7): tables and statistics from
# every metrics file, its per-query values and the timing files; figures beside
# it in reports/{name}/, the tidy results table in reports/{name}.parquet and
# the findings, one row per statement, in reports/{name}.findings.parquet.
import mimetypes
import os

# Outputs in Snakemake's HTML report (`snakemake --report report.html`), each with
# its caption in workflow/report/. Python's mimetypes has no entry for Parquet
# (the report would call the tables text/plain); its registered media type:
mimetypes.add_type("application/vnd.apache.parquet", ".parquet")
# the figures' subcategory, by the prefix of their names (brcd/report/dataset.py, brcd/report/ranks.py)
FIGURE_KINDS = (
    ("pr_", "Precision–recall"),
    ("map_vs_bits_", "mAP vs bits"),
    ("latency_vs_map_", "Latency vs mAP"),
    ("lambda_", "λ sensitivity"),
    ("ranks", "Ranks"),
)

REPORT_MD = layout.REPORT.format(name=config["name"])
REPORT_FIGURES = os.path.splitext(REPORT_MD)[0]


rule report:
    input:
        metrics=metrics_targets(config),
        queries=per_query_targets(config),
        selections=selection_targets(config),
        timing=timing_targets(config),
    output:
        markdown=report(
            REPORT_MD,
            caption="../report/report_markdown.rst",
            category="Report",
            labels={"report": config["name"]},
        ),
        table=report(
            layout.REPORT_TABLE.format(name=config["name"]),
            caption="../report/results_table.rst",
            category="Tables",
            labels={"table": "results, one row per metrics file"},
        ),
        findings=report(
            layout.REPORT_FINDINGS.format(name=config["name"]),
            caption="../report/findings.rst",
            category="Tables",
            labels={"table": "findings, one row per statement"},
        ),
        figures=report(
            directory(REPORT_FIGURES),
            patterns=["{figure}.png"],
            caption="../report/figures.rst",
            category="Figures",
            subcategory=lambda w: next(
                (kind for prefix, kind in FIGURE_KINDS if w.figure.startswith(prefix)), "Other"
            ),
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
