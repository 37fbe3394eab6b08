# Stage 7: encoder and search timing. Timing jobs take every core, so
# Snakemake runs nothing beside them and the numbers are not disturbed.


rule time_encoder:
    input:
        split=layout.SPLIT,
    output:
        layout.TIMING_ENCODER,
    log:
        "logs/time_encoder/{dataset}/{backbone}.log",
    benchmark:
        layout.BENCHMARKS["time_encoder"]
    # "Every core": Snakemake caps threads at --cores, so locally this job holds all
    # of them and runs alone (workflow.cores would fail at parse time without --cores,
    # as on Slurm, where the profile sets 8 threads and an exclusive node instead).
    threads: 1024
    conda:
        "../../environment.yml"
    params:
        brcd=BRCD,
        bits=max(config["bits"]),
        settings=lambda w: {"timing": config["timing"], "backbone": backbone_options(config, w.backbone, w.dataset)},
    shell:
        "{params.brcd} time-encoder --config $BRCD_CONFIG --dataset {wildcards.dataset}"
        " --backbone {wildcards.backbone} --bits {params.bits} --threads {threads}"
        " --out {output} > {log} 2>&1"


rule time_search:
    output:
        layout.TIMING_SEARCH,
    log:
        "logs/time_search/{bits}.log",
    benchmark:
        layout.BENCHMARKS["time_search"]
    # "Every core": Snakemake caps threads at --cores, so locally this job holds all
    # of them and runs alone (workflow.cores would fail at parse time without --cores,
    # as on Slurm, where the profile sets 8 threads and an exclusive node instead).
    threads: 1024
    conda:
        "../../environment.yml"
    params:
        brcd=BRCD,
        settings=lambda w: config["timing"],
    shell:
        "{params.brcd} time-search --config $BRCD_CONFIG --bits {wildcards.bits} --threads {threads}"
        " --out {output} > {log} 2>&1"
