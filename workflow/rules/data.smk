# Stage 1: seeded dataset splits (SPEC §5).


rule split:
    output:
        "results/{dataset}/split.parquet",
    log:
        "logs/split/{dataset}.log",
    benchmark:
        "logs/split/{dataset}.bench.tsv"
    conda:
        "../../environment.yml"
    params:
        brcd=BRCD,
        config=CONFIG_FILE,
    shell:
        "{params.brcd} split --config {params.config} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"
