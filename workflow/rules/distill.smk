# Stage 5b: student hashing heads distilled from a trained teacher.


def student_inputs(w):
    inputs = {
        "split": cells.SPLIT.format(dataset=w.dataset),
        "teacher": TEACHER_DIR.format(**w) + "/model.pt",
        "student_bank": bank_path(config, w.dataset, w.student),
        "teacher_bank": bank_path(config, w.dataset, w.teacher),
        "clusters": [],
    }
    if needs_clusters(w.kd):
        inputs["clusters"] = [cells.CLUSTERS.format(**w)]
    return inputs


rule train_student:
    input:
        unpack(student_inputs),
    output:
        model=STUDENT_DIR + "/model.pt",
        history=STUDENT_DIR + "/history.tsv",
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
        config=CONFIG_FILE,
        banks=lambda w, input: " ".join(
            [option("--student-bank", input.student_bank), option("--teacher-bank", input.teacher_bank)]
        ),
        clusters=lambda w, input: option("--clusters", input.clusters),
        config_hash=lambda w: cells.Cell(
            w.dataset, int(w.bits), w.hash, w.teacher, int(w.seed), w.student, w.kd
        ).config_hash(config),
    shell:
        BRCD + " train-student --config {params.config} --dataset {wildcards.dataset} --bits {wildcards.bits}"
        " --hash {wildcards.hash} --teacher {wildcards.teacher} --student {wildcards.student}"
        " --kd {wildcards.kd} --seed {wildcards.seed} --split {input.split}"
        " --teacher-checkpoint {input.teacher} {params.banks} {params.clusters}"
        " --out {output.model} --log {output.history} --threads {threads} > {log} 2>&1"
