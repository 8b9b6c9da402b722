# Online SAC, once per cell; every variant branches from its pause points.

ONLINE_PAUSES = __import__("replication.agents.online", fromlist=["online_pauses"]).online_pauses(CFG)


rule online:
    output:
        curve=f"{CELL}/online/curve.csv",
        summary=f"{CELL}/online/online.json",
        datasets=expand(f"{CELL}/online/pause_{{pause}}/dataset_buffer.h5", pause=ONLINE_PAUSES, allow_missing=True),
        validation=expand(f"{CELL}/online/pause_{{pause}}/validation.json", pause=ONLINE_PAUSES, allow_missing=True),
    params:
        settings=settings("budget", "online", "evaluation", "validation", "newdata", "seeds"),
        config=CONFIG_FILE,
        out=parent("output.summary"),
    log:
        f"{CELL}/logs/online.log",
    benchmark:
        f"{CELL}/benchmarks/online.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        ENVIRONMENT
    shell:
        "replication online --config {params.config} --env {wildcards.env} --seed {wildcards.seed}"
        " --out {params.out} --no-progress > {log} 2>&1"


rule newdata:
    input:
        online=f"{CELL}/online/online.json",
    output:
        data=f"{CELL}/newdata/{{dataset}}.h5",
        meta=f"{CELL}/newdata/{{dataset}}.h5.json",
    params:
        settings=settings("budget", "newdata", "seeds"),
        config=CONFIG_FILE,
        online=parent("input.online"),
    log:
        f"{CELL}/logs/newdata-{{dataset}}.log",
    benchmark:
        f"{CELL}/benchmarks/newdata-{{dataset}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        ENVIRONMENT
    shell:
        "replication newdata --config {params.config} --env {wildcards.env} --seed {wildcards.seed}"
        " --online {params.online} --dataset {wildcards.dataset} --out {output.data} > {log} 2>&1"
