# batch_jobs: true. One job per cell of `envs` for its newdata datasets, one for its offline
# datasets and one for its fine-tuning methods, each running the variants' own command lines one
# after the other in one process (`replication batch`): the same outputs and results as one job
# per variant, with the start-up (interpreter, imports, environments) paid once. These rules win
# over the per-variant ones for those cells (ruleorder); analysis cells keep one job per variant.
# batch_jobs: cell. One job per cell of `envs` runs all of it, online run first (rule cell).

BATCH = PLAN.batches
MAIN_CELLS = "|".join(re.escape(env) for env in PLAN.batch_envs)


if BATCH["newdata"] and not PLAN.whole_cells:

    ruleorder: newdata_cell > newdata

    rule newdata_cell:
        input:
            online=ONLINE_SUMMARY,
        output:
            **PLAN.layout.batch_outputs("newdata", "{env}", "{seed}", BATCH["newdata"]),
        wildcard_constraints:
            env=MAIN_CELLS,
        params:
            settings=settings("budget", "newdata"),
            commands=cell_commands("newdata"),
        log:
            PLAN.layout.log("newdata", "{env}", "{seed}", "cell"),
        benchmark:
            PLAN.layout.benchmark("newdata", "{env}", "{seed}", "cell")
        priority: longest_cell_first
        threads: 1
        resources:
            mem_mb=4000,
        conda:
            ENVIRONMENT
        shell:
            batch_shell("newdata")


if BATCH["offline"] and not PLAN.whole_cells:

    ruleorder: offline_cell > offline

    rule offline_cell:
        input:
            data=batch_offline_data,
            online=ONLINE_SUMMARY,
        output:
            **PLAN.layout.batch_outputs("offline", "{env}", "{seed}", BATCH["offline"]),
        wildcard_constraints:
            env=MAIN_CELLS,
        params:
            settings=settings("budget", "offline", "evaluation", "validation", "newdata"),
            commands=cell_commands("offline"),
        log:
            PLAN.layout.log("offline", "{env}", "{seed}", "cell"),
        benchmark:
            PLAN.layout.benchmark("offline", "{env}", "{seed}", "cell")
        priority: longest_cell_first
        threads: 1
        resources:
            mem_mb=6000,
        conda:
            ENVIRONMENT
        shell:
            batch_shell("offline")


if BATCH["finetune"] and not PLAN.whole_cells:

    ruleorder: finetune_cell > finetune

    rule finetune_cell:
        input:
            unpack(finetune_inputs),
        output:
            **PLAN.layout.batch_outputs("finetune", "{env}", "{seed}", BATCH["finetune"]),
        wildcard_constraints:
            env=MAIN_CELLS,
        params:
            settings=settings("budget", "finetune", "offline", "evaluation", "validation", "newdata", "analysis"),
            commands=cell_commands("finetune"),
        log:
            PLAN.layout.log("finetune", "{env}", "{seed}", "cell"),
        benchmark:
            PLAN.layout.benchmark("finetune", "{env}", "{seed}", "cell")
        priority: longest_cell_first
        threads: 1
        resources:
            mem_mb=6000,
        conda:
            ENVIRONMENT
        shell:
            batch_shell("finetune")


if PLAN.whole_cells:

    ruleorder: cell > online
    ruleorder: cell > control
    ruleorder: cell > newdata
    ruleorder: cell > offline
    ruleorder: cell > finetune

    rule cell:
        output:
            **PLAN.whole_cell_outputs(),
        wildcard_constraints:
            env=MAIN_CELLS,
        params:
            settings=settings("budget", "online", "evaluation", "validation", "newdata", "offline", "finetune", "analysis"),
            commands=cell_commands("cell"),
        log:
            PLAN.layout.log("cell", "{env}", "{seed}"),
        benchmark:
            PLAN.layout.benchmark("cell", "{env}", "{seed}")
        priority: longest_cell_first
        threads: 1
        resources:
            mem_mb=6000,
        conda:
            ENVIRONMENT
        shell:
            batch_shell("cell")
