# Stage 5b: student hashing heads distilled from a trained teacher, and 5c: the
# λ of each method chosen on validation (brcd/tuning.py). With the tuning seed
# every λ candidate is its own cell (.../{kd}/lambda{λ}/seed{seed}); the other
# seeds train only the selected λ (.../{kd}/selected/seed{seed}).
#
# The λ candidates of one method and seed are trained by one job (rules
# train_candidates*, one per λ grid: brcd.lambdas.candidate_groups): they share
# one process start-up and one loading of the banks, the teacher and the
# validation data, and each writes exactly the files it would write alone.
# Naming one candidate's file builds its whole grid. The runs of each training
# job are evaluated by one job too (evaluate.smk).

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
                [option("--student-bank", input.student_bank), option("--teacher-logits", input.teacher_logits)]
            ),
            clusters=lambda w, input: option("--clusters", input.clusters),
            config_hash=candidate_hashes,
        shell:
            "{params.brcd} train-student --config $BRCD_CONFIG --dataset {wildcards.dataset} --bits {wildcards.bits}"
            " --hash {wildcards.hash} --teacher {wildcards.teacher} --student {wildcards.student}"
            " --kd {wildcards.kd} --variant {params.variants} --seed {wildcards.seed} --split {input.split}"
            " --teacher-checkpoint {input.teacher} --teacher-codes {input.teacher_codes} {params.banks} {params.clusters}"
            " --out {output.model} --log {output.history} --codes {output.sym} --codes-asym {output.asym}"
            " --threads {threads} > {log} 2>&1"


# The other seeds' runs of the selected λ: one job per method trains them all (like the candidates:
# one start-up, one loading of the split, the student's bank and the validation data; each seed's
# teacher files once), and each run writes exactly the files it would write alone. Naming one seed's
# file builds them all. A grid with only the tuning seed has no such runs.
if selected_seeds(config):

    rule train_student:
        input:
            unpack(selected_inputs),
        output:
            model=selected_paths(layout.STUDENT_MODEL, config),
            history=selected_paths(layout.STUDENT_HISTORY, config),
            # both heads' codes (selected for sym and for asym), written by the same job from the features it
            # already holds: a separate encode job would pay start-up and bank loading again (issue: demo budget)
            sym=selected_paths(layout.STUDENT_CODES, config),
            asym=selected_paths(layout.STUDENT_CODES_ASYM, config),
        log:
            "logs/train_student/{dataset}/{bits}/{hash}/{teacher}/{student}/{kd}/selected.log",
        benchmark:
            layout.BENCHMARKS["train_student"]
        threads: 1
        resources:
            mem_mb=4000,
        conda:
            "../../environment.yml"
        params:
            brcd=BRCD,
            seeds=" ".join(map(str, selected_seeds(config))),
            banks=lambda w, input: " ".join(
                [option("--student-bank", input.student_bank), option("--teacher-logits", input.teacher_logits)]
            ),
            clusters=lambda w, input: option("--clusters", input.clusters),
            config_hash=selected_hashes,
        shell:
            "{params.brcd} train-student --config $BRCD_CONFIG --dataset {wildcards.dataset} --bits {wildcards.bits}"
            " --hash {wildcards.hash} --teacher {wildcards.teacher} --student {wildcards.student}"
            " --kd {wildcards.kd} --variant selected --seed {params.seeds} --split {input.split}"
            " --teacher-checkpoint {input.teacher} --teacher-codes {input.teacher_codes} {params.banks} {params.clusters}"
            " --selection {input.selection}"
            " --out {output.model} --log {output.history} --codes {output.sym} --codes-asym {output.asym}"
            " --threads {threads} > {log} 2>&1"


# λ chosen per paradigm from the validation mAP that each candidate's code files record for the head
# selected for it (codes.parquet: sym, codes_asym.parquet: asym): reading their metadata needs no torch.
# One job per method: a retrained candidate reruns only its method's selection and selected runs.
rule select_lambda:
    input:
        lambda w: [path for _, path in selection_candidates(w)],
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
        candidates=lambda w: " ".join(f"{format_lambda(lam)}={path}" for lam, path in selection_candidates(w)),
        tuning_seed=tuning_seed(config),
    shell:
        "{params.brcd} select --config $BRCD_CONFIG --dataset {wildcards.dataset} --bits {wildcards.bits}"
        " --hash {wildcards.hash} --teacher {wildcards.teacher} --student {wildcards.student} --kd {wildcards.kd}"
        " --seed {params.tuning_seed} --candidates {params.candidates} --out {output} > {log} 2>&1"
