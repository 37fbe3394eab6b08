# Stage 6: retrieval evaluation of every model in its paradigms (SPEC §1, §6).


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        metrics=cells.METRICS,
        queries=cells.PER_QUERY,
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
        brcd=BRCD,
        topk=lambda w: config["datasets"][w.dataset]["topk"],
        cell=lambda w: " ".join(f"{k}={v}" for k, v in model_cell(w).parameters().items()),
        student=lambda w, input: option("--student-codes", input.get("student_codes", [])),
        selection=lambda w, input: option("--selection", input.get("selection", [])),
        config_hash=cell_hash,
    shell:
        "{params.brcd} evaluate --split {input.split} --teacher-codes {input.teacher_codes} {params.student} {params.selection}"
        " --paradigm {wildcards.paradigm} --topk {params.topk} --cell {params.cell}"
        " --config-hash {params.config_hash} --threads {threads} --out {output.metrics} --out-queries {output.queries} > {log} 2>&1"
