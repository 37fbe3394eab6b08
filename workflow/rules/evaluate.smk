# Stage 6: retrieval evaluation of every model in its paradigms (SPEC §1, §6).


def evaluate_inputs(w):
    cell = model_cell(w)
    inputs = {
        "split": cells.SPLIT.format(dataset=w.dataset),
        "teacher_codes": cell.teacher_cell().directory() + "/codes.parquet",
    }
    if cell.role == "student":
        name = "codes_asym.parquet" if w.paradigm == "asym" else "codes.parquet"
        inputs["student_codes"] = f"{cell.directory()}/{name}"
    return inputs


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        MODEL_DIR + "/metrics/{paradigm}.json",
    log:
        "logs/evaluate/{dataset}/{bits}/{model}/seed{seed}/{paradigm}.log",
    benchmark:
        "logs/evaluate/{dataset}/{bits}/{model}/seed{seed}/{paradigm}.bench.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../../environment.yml"
    params:
        topk=lambda w: config["datasets"][w.dataset]["topk"],
        cell=lambda w: " ".join(f"{k}={v}" for k, v in model_cell(w).parameters().items()),
        student=lambda w, input: option("--student-codes", input.get("student_codes", [])),
        config_hash=cell_hash,
    shell:
        BRCD + " evaluate --split {input.split} --teacher-codes {input.teacher_codes} {params.student}"
        " --paradigm {wildcards.paradigm} --topk {params.topk} --cell {params.cell}"
        " --config-hash {params.config_hash} --threads {threads} --out {output} > {log} 2>&1"
