# Offline learners on the cell's own data: offline validation and final-policy recommendation.
# One job per (cell, dataset) trains every learner that dataset needs, one after the other.


rule offline:
    input:
        data=offline_data,
        online=ONLINE_SUMMARY,
    output:
        **PLAN.layout.outputs("offline", "{env}", "{seed}", "{dataset}"),
    params:
        settings=settings("budget", "offline", "evaluation", "validation", "newdata"),
        arguments=job_arguments("offline"),
    log:
        PLAN.layout.log("offline", "{env}", "{seed}", "{dataset}"),
    benchmark:
        PLAN.layout.benchmark("offline", "{env}", "{seed}", "{dataset}")
    priority: longest_cell_first
    threads: 1
    resources:
        mem_mb=6000,
    conda:
        ENVIRONMENT
    shell:
        "replication {params.arguments} > {log} 2>&1"
