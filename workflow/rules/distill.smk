# Stage 5b: student hashing heads distilled from a trained teacher, and 5c: the
# λ of each method chosen on validation (brcd/tuning.py). With the tuning seed
# every λ candidate is its own cell (.../{kd}/lambda{λ}/seed{seed}); the other
# seeds train only the selected λ (.../{kd}/selected/seed{seed}).
#
# The λ candidates of one method and seed are trained by one job (rules
# train_candidates*, one per λ grid: brcd.tuning.candidate_groups): they share
# one process start-up and one loading of the banks, the teacher and the
# validation data, and each writes exactly the files it would write alone.
# Naming one candidate's file builds its whole grid.

for _rule_name, (_grid, _methods) in candidate_groups(config).items():

    rule:
        name:
            _rule_name
        input:
            unpack(candidate_inputs),
        output:
            model=candidate_paths(layout.STUDENT_MODEL, _grid),
            history=candidate_paths(layout.STUDENT_HISTORY, _grid),
            sym=candidate_paths(layout.STUDENT_CODES, _grid),
            asym=candidate_paths(layout.STUDENT_CODES_ASYM, _grid),
        wildcard_constraints:
            kd="|".join(_methods),
        log:
            "logs/train_candidates/{dataset}/{bits}/{hash}/{teacher}/{student}/{kd}/seed{seed}.log",
        benchmark:
            layout.BENCHMARKS["train_candidates"]
        threads: 1
        resources:
            mem_mb=4000,
        conda:
            "../../environment.yml"
        params:
            brcd=BRCD,
            variants=" ".join(variant_of(lam) for lam in _grid),
            banks=lambda w, input: " ".join(
                [option("--student-bank", input.student_bank), option("--teacher-bank", input.teacher_bank)]
            ),
            clusters=lambda w, input: option("--clusters", input.clusters),
            config_hash=lambda w, grid=_grid: candidate_hashes(w, grid),
        shell:
            "{params.brcd} train-student --config $BRCD_CONFIG --dataset {wildcards.dataset} --bits {wildcards.bits}"
            " --hash {wildcards.hash} --teacher {wildcards.teacher} --student {wildcards.student}"
            " --kd {wildcards.kd} --variant {params.variants} --seed {wildcards.seed} --split {input.split}"
            " --teacher-checkpoint {input.teacher} {params.banks} {params.clusters}"
            " --out {output.model} --log {output.history} --codes {output.sym} --codes-asym {output.asym}"
            " --threads {threads} > {log} 2>&1"


# The other seeds' runs of the selected λ (candidates: rules train_candidates* above).
rule train_student:
    input:
        unpack(student_inputs),
    output:
        model=layout.STUDENT_MODEL,
        history=layout.STUDENT_HISTORY,
        # both heads' codes (selected for sym and for asym), written by the same job from the features it
        # already holds: a separate encode job would pay start-up and bank loading again (issue: demo budget)
        sym=layout.STUDENT_CODES,
        asym=layout.STUDENT_CODES_ASYM,
    wildcard_constraints:
        variant=SELECTED,
    log:
        "logs/train_student/{dataset}/{bits}/{hash}/{teacher}/{student}/{kd}/{variant}/seed{seed}.log",
    benchmark:
        layout.BENCHMARKS["train_student"]
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../../environment.yml"
    params:
        brcd=BRCD,
        banks=lambda w, input: " ".join(
            [option("--student-bank", input.student_bank), option("--teacher-bank", input.teacher_bank)]
        ),
        clusters=lambda w, input: option("--clusters", input.clusters),
        selection=lambda w, input: option("--selection", input.selection),
        config_hash=lambda w: student_cell(w).config_hash(config),
    shell:
        "{params.brcd} train-student --config $BRCD_CONFIG --dataset {wildcards.dataset} --bits {wildcards.bits}"
        " --hash {wildcards.hash} --teacher {wildcards.teacher} --student {wildcards.student}"
        " --kd {wildcards.kd} --variant {wildcards.variant} --seed {wildcards.seed} --split {input.split}"
        " --teacher-checkpoint {input.teacher} {params.banks} {params.clusters} {params.selection}"
        " --out {output.model} --log {output.history} --codes {output.sym} --codes-asym {output.asym}"
        " --threads {threads} > {log} 2>&1"


rule select_lambda:
    input:
        candidate_models,
    output:
        layout.SELECTION,
    log:
        "logs/select_lambda/{dataset}/{bits}/{hash}/{teacher}/{student}/{kd}.log",
    benchmark:
        layout.BENCHMARKS["select_lambda"]
    threads: 1
    conda:
        "../../environment.yml"
    params:
        brcd=BRCD,
        candidates=lambda w, input: " ".join(
            f"{format_lambda(lam)}={path}" for lam, path in zip(lambda_grid(config, w.kd), input)
        ),
        tuning_seed=tuning_seed(config),
    shell:
        "{params.brcd} select --config $BRCD_CONFIG --dataset {wildcards.dataset} --bits {wildcards.bits}"
        " --hash {wildcards.hash} --teacher {wildcards.teacher} --student {wildcards.student} --kd {wildcards.kd}"
        " --seed {params.tuning_seed} --candidates {params.candidates} --out {output} > {log} 2>&1"
