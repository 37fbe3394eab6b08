# Stage 2: frozen-backbone feature banks (bank mode, SPEC §8).


rule features:
    input:
        split=layout.SPLIT,
    output:
        directory(layout.FEATURES),
    log:
        "logs/features/{dataset}/{backbone}.log",
    benchmark:
        layout.BENCHMARKS["features"]
    # A fixed count, not workflow.cores (which fails at parse time when no --cores is
    # given, as on Slurm): locally Snakemake caps it at --cores; the slurm profile sets its own.
    threads: 8
    resources:
        mem_mb=8000,
    conda:
        "../../environment.yml"
    params:
        brcd=BRCD,
        # what identifies a bank besides its split: changing it rebuilds the bank
        settings=lambda w: {
            "backbone": backbone_options(config, w.backbone, w.dataset),
            "views": config["views"],
            "aug_seed": config["aug_seed"],
        },
    shell:
        "{params.brcd} features --config $BRCD_CONFIG --dataset {wildcards.dataset}"
        " --backbone {wildcards.backbone} --split {input.split} --out {output}"
        " --threads {threads} > {log} 2>&1"
