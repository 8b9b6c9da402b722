# Offline learners on the cell's own data: offline validation and final-policy recommendation.
# One job per (cell, dataset) trains every learner that dataset needs, one after the other.


rule offline:
    input:
        data=offline_data,
        online=f"{CELL}/online/online.json",
    output:
        recommend=f"{CELL}/offline/{{dataset}}/recommend.csv",
        summary=f"{CELL}/offline/{{dataset}}/offline.json",
    params:
        settings=settings("budget", "offline", "evaluation", "validation", "newdata"),
        config=CONFIG_FILE,
        algos=lambda w: wf.offline_algos(CFG, w.env, int(w.seed), w.dataset),
        online=parent("input.online"),
        out=parent("output.summary"),
    log:
        f"{CELL}/logs/offline-{{dataset}}.log",
    benchmark:
        f"{CELL}/benchmarks/offline-{{dataset}}.tsv"
    threads: 1
    resources:
        mem_mb=6000,
    conda:
        ENVIRONMENT
    shell:
        "replication offline --config {params.config} --env {wildcards.env} --seed {wildcards.seed}"
        " --algo {params.algos} --dataset {wildcards.dataset} --data {input.data}"
        " --online {params.online} --out {params.out} > {log} 2>&1"
