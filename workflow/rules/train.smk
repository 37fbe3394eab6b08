# Stage 3: teacher hashing heads, and encoding any trained model to codes.


rule train_teacher:
    input:
        split=cells.SPLIT,
        bank=lambda w: bank_path(config, w.dataset, w.teacher),
    output:
        model=TEACHER_DIR + "/model.pt",
        history=TEACHER_DIR + "/history.tsv",
    log:
        "logs/train_teacher/{dataset}/{bits}/{hash}/{teacher}/seed{seed}.log",
    benchmark:
        "logs/train_teacher/{dataset}/{bits}/{hash}/{teacher}/seed{seed}.bench.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../../environment.yml"
    params:
        config=CONFIG_FILE,
        bank=lambda w, input: option("--bank", input.bank),
        config_hash=lambda w: cells.Cell(w.dataset, int(w.bits), w.hash, w.teacher, int(w.seed)).config_hash(config),
    shell:
        BRCD + " train-teacher --config {params.config} --dataset {wildcards.dataset} --bits {wildcards.bits}"
        " --hash {wildcards.hash} --teacher {wildcards.teacher} --seed {wildcards.seed}"
        " --split {input.split} {params.bank} --out {output.model} --log {output.history}"
        " --threads {threads} > {log} 2>&1"


rule encode:
    input:
        split=cells.SPLIT,
        model=MODEL_DIR + "/model.pt",
        bank=model_bank,
    output:
        MODEL_DIR + "/codes.parquet",
    log:
        "logs/encode/{dataset}/{bits}/{model}/seed{seed}.log",
    threads: 1
    conda:
        "../../environment.yml"
    params:
        config=CONFIG_FILE,
        bank=lambda w, input: option("--bank", input.bank),
        selection="",
        config_hash=cell_hash,
    shell:
        BRCD + " encode --config {params.config} --dataset {wildcards.dataset} --bits {wildcards.bits}"
        " --model {wildcards.model} --seed {wildcards.seed} --split {input.split} {params.selection}"
        " --checkpoint {input.model} {params.bank} --out {output} --threads {threads} > {log} 2>&1"


# A student's second head, selected on validation mAP in the asymmetric paradigm.
use rule encode as encode_asym with:
    output:
        "results/{dataset}/{bits}/{model,student/[^/]+/[^/]+/[^/]+/[^/]+}/seed{seed}/codes_asym.parquet",
    log:
        "logs/encode_asym/{dataset}/{bits}/{model}/seed{seed}.log",
    params:
        config=CONFIG_FILE,
        bank=lambda w, input: option("--bank", input.bank),
        selection="--selection asym",
        config_hash=cell_hash,
