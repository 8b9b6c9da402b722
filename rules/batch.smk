# batch_jobs: true. One job per cell of `envs` for its newdata datasets, one for its offline
# datasets and one for its fine-tuning methods, each running the variants' own command lines one
# after the other in one process (`replication batch`): the same outputs and results as one job
# per variant, with the start-up (interpreter, imports, environments) paid once. These rules win
# over the per-variant ones for those cells (ruleorder); analysis cells keep one job per variant.

BATCH = wf.cell_batches(CFG)
MAIN_CELLS = "|".join(re.escape(env) for env in CFG["envs"])


if BATCH["newdata"]:

    ruleorder: newdata_cell > newdata

    rule newdata_cell:
        input:
            online=f"{CELL}/online/online.json",
        output:
            data=expand(f"{CELL}/newdata/{{dataset}}.h5", dataset=BATCH["newdata"], allow_missing=True),
            meta=expand(f"{CELL}/newdata/{{dataset}}.h5.json", dataset=BATCH["newdata"], allow_missing=True),
        wildcard_constraints:
            env=MAIN_CELLS,
        params:
            settings=settings("budget", "newdata", "seeds"),
            commands=batch_commands("newdata"),
        log:
            f"{CELL}/logs/newdata-cell.log",
        benchmark:
            f"{CELL}/benchmarks/newdata-cell.tsv"
        threads: 1
        resources:
            mem_mb=4000,
        conda:
            ENVIRONMENT
        shell:
            "replication batch {params.commands} > {log} 2>&1"


if BATCH["offline"]:

    ruleorder: offline_cell > offline

    rule offline_cell:
        input:
            data=batch_offline_data,
            online=f"{CELL}/online/online.json",
        output:
            recommend=expand(f"{CELL}/offline/{{dataset}}/recommend.csv", dataset=BATCH["offline"], allow_missing=True),
            summary=expand(f"{CELL}/offline/{{dataset}}/offline.json", dataset=BATCH["offline"], allow_missing=True),
        wildcard_constraints:
            env=MAIN_CELLS,
        params:
            settings=settings("budget", "offline", "evaluation", "validation", "newdata"),
            commands=batch_commands("offline"),
        log:
            f"{CELL}/logs/offline-cell.log",
        benchmark:
            f"{CELL}/benchmarks/offline-cell.tsv"
        threads: 1
        resources:
            mem_mb=6000,
        conda:
            ENVIRONMENT
        shell:
            "replication batch {params.commands} > {log} 2>&1"


if BATCH["finetune"]:

    ruleorder: finetune_cell > finetune

    rule finetune_cell:
        input:
            unpack(finetune_inputs),
        output:
            curve=expand(f"{CELL}/finetune/{{algo}}/curve.csv", algo=BATCH["finetune"], allow_missing=True),
            summary=expand(f"{CELL}/finetune/{{algo}}/finetune.json", algo=BATCH["finetune"], allow_missing=True),
        wildcard_constraints:
            env=MAIN_CELLS,
        params:
            settings=settings("budget", "finetune", "offline", "evaluation", "validation", "newdata", "analysis"),
            commands=batch_commands("finetune"),
        log:
            f"{CELL}/logs/finetune-cell.log",
        benchmark:
            f"{CELL}/benchmarks/finetune-cell.tsv"
        threads: 1
        resources:
            mem_mb=6000,
        conda:
            ENVIRONMENT
        shell:
            "replication batch {params.commands} > {log} 2>&1"
