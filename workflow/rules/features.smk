# Stage 2: frozen-backbone feature banks (bank mode, SPEC §8).


rule features:
    input:
        split=cells.SPLIT,
    output:
        directory(cells.FEATURES),
    log:
        "logs/features/{dataset}/{backbone}.log",
    benchmark:
        "logs/features/{dataset}/{backbone}.bench.tsv"
    threads: workflow.cores
    resources:
        mem_mb=8000,
    conda:
        "../../environment.yml"
    params:
        brcd=BRCD,
        config=CONFIG_FILE,
        # what identifies a bank besides its split: changing it rebuilds the bank
        settings=lambda w: {
            "backbone": config["backbones"][w.backbone],
            "views": config["views"],
            "aug_seed": config["aug_seed"],
        },
    shell:
        "{params.brcd} features --config {params.config} --dataset {wildcards.dataset}"
        " --backbone {wildcards.backbone} --split {input.split} --out {output}"
        " --threads {threads} > {log} 2>&1"
