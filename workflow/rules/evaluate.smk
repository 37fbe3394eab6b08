# Stage 6: retrieval evaluation of every model in its paradigms (SPEC §1, §6).
#
# A teacher run has one paradigm, `teacher` (rule evaluate_teacher, one job per run). Student runs are
# evaluated in every paradigm of the grid's `paradigms`, one job per student training job: rules
# evaluate_candidates* (one per λ grid, like train_candidates*: brcd.lambdas.candidate_groups) evaluate
# a method's λ candidates of one seed, rule evaluate_selected its other seeds' runs of the selected λ.
# A job pays one process start-up and reads the split once and the teacher's codes once per seed; each
# run's metrics/{paradigm}.json and .queries.parquet are the files a job of its own would write
# (`brcd evaluate` with one run). Naming one of them runs the job of its group.


rule evaluate_teacher:
    input:
        unpack(teacher_evaluation_inputs),
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
        cell=lambda w: cell_arguments([model_cell(w)]),
        config_hash=cell_hash,
    shell:
        "{params.brcd} evaluate --split {input.split} --teacher-codes {input.teacher_codes}"
        " --paradigm teacher --topk {params.topk} --cell {params.cell}"
        " --config-hash {params.config_hash} --threads {threads} --out {output.metrics} --out-queries {output.queries} > {log} 2>&1"


# The outputs (and --student-codes) are run-major: every paradigm of the grid, in config order, of
# the first run, then of the next (brcd.workflow.per_paradigm); --cell names the runs in that order
# (brcd.workflow.cell_arguments) and --config-hash gives each run's hash.
for _rule_name, (_grid, _methods) in candidate_groups(config, "evaluate_candidates").items():

    rule:
        name:
            _rule_name
        input:
            unpack(lambda w: evaluation_job_inputs(config, candidate_runs(w))),
        output:
            metrics=per_paradigm(candidate_paths(layout.STUDENT_METRICS, _grid), config["paradigms"]),
            queries=per_paradigm(candidate_paths(layout.STUDENT_PER_QUERY, _grid), config["paradigms"]),
        wildcard_constraints:
            kd="|".join(_methods),
        log:
            "logs/evaluate_candidates/{dataset}/{bits}/{hash}/{teacher}/{student}/{kd}/seed{seed}.log",
        benchmark:
            layout.BENCHMARKS["evaluate_candidates"]
        threads: 1
        resources:
            mem_mb=2000,
        conda:
            "../../environment.yml"
        params:
            brcd=BRCD,
            paradigms=" ".join(config["paradigms"]),
            topk=lambda w: config["datasets"][w.dataset]["topk"],
            cell=lambda w: cell_arguments(candidate_runs(w)),
            config_hash=candidate_hashes,
        shell:
            "{params.brcd} evaluate --split {input.split} --teacher-codes {input.teacher_codes}"
            " --student-codes {input.student_codes} --paradigm {params.paradigms} --topk {params.topk}"
            " --cell {params.cell} --config-hash {params.config_hash} --threads {threads}"
            " --out {output.metrics} --out-queries {output.queries} > {log} 2>&1"


# The selected runs of all seeds but the tuning seed; their metrics files record how λ was chosen
# (--selection). A grid with only the tuning seed has none.
if selected_seeds(config):

    rule evaluate_selected:
        input:
            unpack(lambda w: evaluation_job_inputs(config, selected_runs(w))),
        output:
            metrics=per_paradigm(selected_paths(layout.STUDENT_METRICS, config), config["paradigms"]),
            queries=per_paradigm(selected_paths(layout.STUDENT_PER_QUERY, config), config["paradigms"]),
        log:
            "logs/evaluate_selected/{dataset}/{bits}/{hash}/{teacher}/{student}/{kd}/selected.log",
        benchmark:
            layout.BENCHMARKS["evaluate_selected"]
        threads: 1
        resources:
            mem_mb=2000,
        conda:
            "../../environment.yml"
        params:
            brcd=BRCD,
            paradigms=" ".join(config["paradigms"]),
            topk=lambda w: config["datasets"][w.dataset]["topk"],
            cell=lambda w: cell_arguments(selected_runs(w)),
            config_hash=selected_hashes,
        shell:
            "{params.brcd} evaluate --split {input.split} --teacher-codes {input.teacher_codes}"
            " --student-codes {input.student_codes} --selection {input.selection} --paradigm {params.paradigms}"
            " --topk {params.topk} --cell {params.cell} --config-hash {params.config_hash} --threads {threads}"
            " --out {output.metrics} --out-queries {output.queries} > {log} 2>&1"
