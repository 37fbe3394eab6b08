# Stage 6: retrieval evaluation of every model in its paradigms (SPEC §1, §6).
#
# A teacher cell has one paradigm, `teacher` (rule evaluate_teacher). A student
# cell is evaluated in every paradigm of the grid's `paradigms` by ONE job (rule
# evaluate): one process start-up and one reading of the split and the code
# files, and each paradigm's metrics/{paradigm}.json and .queries.parquet are the
# files a job of its own would write. Naming one of them runs the cell's job.


rule evaluate_teacher:
    input:
        unpack(evaluate_inputs),
    output:
        metrics=layout.METRICS.replace("{paradigm}", "teacher"),
        queries=layout.PER_QUERY.replace("{paradigm}", "teacher"),
    wildcard_constraints:
        model=r"teacher/[^/]+/[^/]+",
    log:
        "logs/evaluate_teacher/{dataset}/{bits}/{model}/seed{seed}.log",
    benchmark:
        layout.BENCHMARKS["evaluate_teacher"]
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../../environment.yml"
    params:
        brcd=BRCD,
        topk=lambda w: config["datasets"][w.dataset]["topk"],
        cell=lambda w: " ".join(f"{k}={v}" for k, v in model_cell(w).parameters().items()),
        config_hash=cell_hash,
    shell:
        "{params.brcd} evaluate --split {input.split} --teacher-codes {input.teacher_codes}"
        " --paradigm teacher --topk {params.topk} --cell {params.cell}"
        " --config-hash {params.config_hash} --threads {threads} --out {output.metrics} --out-queries {output.queries} > {log} 2>&1"


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        # one of each per paradigm of the grid, in config order (the order of --paradigm and --student-codes)
        metrics=expand(layout.METRICS, paradigm=config["paradigms"], allow_missing=True),
        queries=expand(layout.PER_QUERY, paradigm=config["paradigms"], allow_missing=True),
    wildcard_constraints:
        model=r"student/[^/]+/[^/]+/[^/]+/[^/]+/(lambda[0-9.e+-]+|selected)",
    log:
        "logs/evaluate/{dataset}/{bits}/{model}/seed{seed}.log",
    benchmark:
        layout.BENCHMARKS["evaluate"]
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../../environment.yml"
    params:
        brcd=BRCD,
        paradigms=" ".join(config["paradigms"]),
        topk=lambda w: config["datasets"][w.dataset]["topk"],
        cell=lambda w: " ".join(f"{k}={v}" for k, v in model_cell(w).parameters().items()),
        selection=lambda w, input: option("--selection", input.selection),
        config_hash=cell_hash,
    shell:
        "{params.brcd} evaluate --split {input.split} --teacher-codes {input.teacher_codes}"
        " --student-codes {input.student_codes} {params.selection}"
        " --paradigm {params.paradigms} --topk {params.topk} --cell {params.cell}"
        " --config-hash {params.config_hash} --threads {threads} --out {output.metrics} --out-queries {output.queries} > {log} 2>&1"
