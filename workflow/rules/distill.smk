# Stage 5b: student hashing heads distilled from a trained teacher.


rule train_student:
    input:
        unpack(student_inputs),
    output:
        model=cells.STUDENT_MODEL,
        history=cells.STUDENT_HISTORY,
    log:
        "logs/train_student/{dataset}/{bits}/{hash}/{teacher}/{student}/{kd}/seed{seed}.log",
    benchmark:
        "logs/train_student/{dataset}/{bits}/{hash}/{teacher}/{student}/{kd}/seed{seed}.bench.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../../environment.yml"
    params:
        brcd=BRCD,
        config=CONFIG_FILE,
        banks=lambda w, input: " ".join(
            [option("--student-bank", input.student_bank), option("--teacher-bank", input.teacher_bank)]
        ),
        clusters=lambda w, input: option("--clusters", input.clusters),
        config_hash=lambda w: student_cell(w).config_hash(config),
    shell:
        "{params.brcd} train-student --config {params.config} --dataset {wildcards.dataset} --bits {wildcards.bits}"
        " --hash {wildcards.hash} --teacher {wildcards.teacher} --student {wildcards.student}"
        " --kd {wildcards.kd} --seed {wildcards.seed} --split {input.split}"
        " --teacher-checkpoint {input.teacher} {params.banks} {params.clusters}"
        " --out {output.model} --log {output.history} --threads {threads} > {log} 2>&1"


# Both heads of a student (selected for sym and for asym) in one job.
rule encode:
    input:
        split=cells.SPLIT,
        model=cells.STUDENT_MODEL,
        bank=lambda w: bank_path(config, w.dataset, w.student),
    output:
        sym=cells.STUDENT_CODES,
        asym=cells.STUDENT_CODES_ASYM,
    log:
        "logs/encode/{dataset}/{bits}/{hash}/{teacher}/{student}/{kd}/seed{seed}.log",
    benchmark:
        "logs/encode/{dataset}/{bits}/{hash}/{teacher}/{student}/{kd}/seed{seed}.bench.tsv"
    threads: 1
    conda:
        "../../environment.yml"
    params:
        brcd=BRCD,
        config=CONFIG_FILE,
        bank=lambda w, input: option("--bank", input.bank),
        model=lambda w: student_cell(w).model,
    shell:
        "{params.brcd} encode --config {params.config} --dataset {wildcards.dataset} --bits {wildcards.bits}"
        " --model {params.model} --seed {wildcards.seed} --split {input.split}"
        " --checkpoint {input.model} {params.bank} --out {output.sym} --out-asym {output.asym}"
        " --threads {threads} > {log} 2>&1"
