# Online fine-tuning from the validated offline agent (SAC continuation is the online run itself).


rule finetune:
    input:
        unpack(finetune_inputs),
    output:
        **PLAN.layout.outputs("finetune", "{env}", "{seed}", "{algo}"),
    params:
        settings=settings("budget", "finetune", "offline", "evaluation", "validation", "newdata", "analysis"),
        arguments=job_arguments("finetune"),
    log:
        PLAN.layout.log("finetune", "{env}", "{seed}", "{algo}"),
    benchmark:
        PLAN.layout.benchmark("finetune", "{env}", "{seed}", "{algo}")
    priority: longest_cell_first
    threads: 1
    resources:
        mem_mb=6000,
    conda:
        ENVIRONMENT
    shell:
        "replication {params.arguments} > {log} 2>&1"
