# Stage 1: seeded dataset splits (SPEC §5).


rule split:
    output:
        "results/{dataset}/split.parquet",
    log:
        "logs/split/{dataset}.log",
    benchmark:
        layout.BENCHMARKS["split"]
    conda:
        "../../environment.yml"
    params:
        brcd=BRCD,
        # the split's own settings: changing them rebuilds the split (and all that follows)
        settings=lambda w: {"dataset": config["datasets"][w.dataset], "split_seed": config["split_seed"]},
    shell:
        "{params.brcd} split --config $BRCD_CONFIG --dataset {wildcards.dataset} --out {output} > {log} 2>&1"
