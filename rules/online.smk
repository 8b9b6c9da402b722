# Online SAC, once per cell; every variant branches from its pause points.


rule online:
    output:
        **PLAN.layout.outputs("online", "{env}", "{seed}", pauses=PLAN.online_pauses),
    params:
        settings=settings("budget", "online", "evaluation", "validation", "newdata"),
        arguments=job_arguments("online"),
    log:
        PLAN.layout.log("online", "{env}", "{seed}"),
    benchmark:
        PLAN.layout.benchmark("online", "{env}", "{seed}")
    priority: longest_cell_first
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        ENVIRONMENT
    shell:
        "replication {params.arguments} > {log} 2>&1"


rule control:
    # C1's control: online SAC's validated best snapshot at each pause, from the finished run (no training)
    input:
        online=ONLINE_SUMMARY,
    output:
        **PLAN.layout.outputs("control", "{env}", "{seed}"),
    params:
        settings=settings("budget", "validation", "evaluation"),
        arguments=job_arguments("control"),
    log:
        PLAN.layout.log("control", "{env}", "{seed}"),
    benchmark:
        PLAN.layout.benchmark("control", "{env}", "{seed}")
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        ENVIRONMENT
    shell:
        "replication {params.arguments} > {log} 2>&1"


rule newdata:
    input:
        online=ONLINE_SUMMARY,
    output:
        **PLAN.layout.outputs("newdata", "{env}", "{seed}", "{dataset}"),
    params:
        settings=settings("budget", "newdata"),
        arguments=job_arguments("newdata"),
    log:
        PLAN.layout.log("newdata", "{env}", "{seed}", "{dataset}"),
    benchmark:
        PLAN.layout.benchmark("newdata", "{env}", "{seed}", "{dataset}")
    priority: longest_cell_first
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        ENVIRONMENT
    shell:
        "replication {params.arguments} > {log} 2>&1"
