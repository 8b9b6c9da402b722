# Online SAC, once per cell; every variant branches from its pause points.

ONLINE_PAUSES = __import__("replication.online", fromlist=["online_pauses"]).online_pauses(CFG)


rule online:
    output:
        curve=CELL + "/online/curve.csv",
        summary=CELL + "/online/online.json",
        datasets=expand(CELL + "/online/pause_{pause}/dataset_buffer.h5", pause=ONLINE_PAUSES, allow_missing=True),
        validation=expand(CELL + "/online/pause_{pause}/validation.json", pause=ONLINE_PAUSES, allow_missing=True),
    params:
        settings=settings("budget", "online", "evaluation", "validation", "newdata", "seeds"),
        out=CELL + "/online",
    log:
        CELL + "/logs/online.log",
    benchmark:
        CELL + "/benchmarks/online.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "{RUN} online --config {CONFIG_FILE} --env {wildcards.env} --seed {wildcards.seed}"
        " --out {params.out} --no-progress > {log} 2>&1"


rule newdata:
    input:
        online=CELL + "/online/online.json",
    output:
        data=CELL + "/newdata/{dataset}.h5",
        meta=CELL + "/newdata/{dataset}.h5.json",
    params:
        settings=settings("budget", "newdata", "seeds"),
        online=CELL + "/online",
    log:
        CELL + "/logs/newdata-{dataset}.log",
    benchmark:
        CELL + "/benchmarks/newdata-{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "{RUN} newdata --config {CONFIG_FILE} --env {wildcards.env} --seed {wildcards.seed}"
        " --online {params.online} --dataset {wildcards.dataset} --out {output.data} > {log} 2>&1"
