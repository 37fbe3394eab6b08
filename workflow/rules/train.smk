# Stage 3: teacher hashing heads, and encoding any trained model to codes.


rule train_teacher:
    input:
        split=layout.SPLIT,
        bank=lambda w: bank_path(config, w.dataset, w.teacher),
    output:
        model=layout.TEACHER_MODEL,
        history=layout.TEACHER_HISTORY,
    log:
        "logs/train_teacher/{dataset}/{bits}/{hash}/{teacher}/seed{seed}.log",
    benchmark:
        layout.BENCHMARKS["train_teacher"]
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../../environment.yml"
    params:
        brcd=BRCD,
        bank=lambda w, input: option("--bank", input.bank),
        config_hash=lambda w: teacher_cell(w).config_hash(config),
    shell:
        "{params.brcd} train-teacher --config $BRCD_CONFIG --dataset {wildcards.dataset} --bits {wildcards.bits}"
        " --hash {wildcards.hash} --teacher {wildcards.teacher} --seed {wildcards.seed}"
        " --split {input.split} {params.bank} --out {output.model} --log {output.history}"
        " --threads {threads} > {log} 2>&1"


rule encode_teacher:
    input:
        split=layout.SPLIT,
        model=layout.TEACHER_MODEL,
        bank=lambda w: bank_path(config, w.dataset, w.teacher),
    output:
        # bank mode: also the head's logits of every stored view, read by every student of this teacher
        **teacher_encode_outputs(config),
    log:
        "logs/encode_teacher/{dataset}/{bits}/{hash}/{teacher}/seed{seed}.log",
    benchmark:
        layout.BENCHMARKS["encode_teacher"]
    threads: 1
    conda:
        "../../environment.yml"
    params:
        brcd=BRCD,
        bank=lambda w, input: option("--bank", input.bank),
        model=lambda w: teacher_cell(w).model,
        logits=lambda w, output: option("--out-logits", output.get("logits", [])),
    shell:
        "{params.brcd} encode --config $BRCD_CONFIG --dataset {wildcards.dataset} --bits {wildcards.bits}"
        " --model {params.model} --seed {wildcards.seed} --split {input.split}"
        " --checkpoint {input.model} {params.bank} --out {output.codes} {params.logits} --threads {threads} > {log} 2>&1"
