# Stage 5a: clusters and bit mask of a trained teacher's codes (BRCD).


rule cluster:
    input:
        split=layout.SPLIT,
        codes=layout.TEACHER_CODES,
    output:
        layout.CLUSTERS,
    log:
        "logs/cluster/{dataset}/{bits}/{hash}/{teacher}/seed{seed}.log",
    benchmark:
        layout.BENCHMARKS["cluster"]
    threads: 1
    conda:
        "../../environment.yml"
    params:
        brcd=BRCD,
        settings=lambda w: cluster_settings(config["brcd"]),
    shell:
        "{params.brcd} cluster --config $BRCD_CONFIG --teacher-codes {input.codes} --split {input.split}"
        " --seed {wildcards.seed} --out {output} > {log} 2>&1"
