# Offline learners on the cell's own data: offline validation and final-policy recommendation.
# One job per (cell, dataset) trains every learner that dataset needs, one after the other.


def offline_data(wildcards):
    dataset = wf.parse_dataset_key(CFG, wildcards.dataset)
    return str(wf.dataset_file(CFG, wildcards.env, int(wildcards.seed), dataset))


rule offline:
    input:
        data=offline_data,
        online=CELL + "/online/online.json",
    output:
        recommend=CELL + "/offline/{dataset}/recommend.csv",
        summary=CELL + "/offline/{dataset}/offline.json",
    params:
        settings=settings("budget", "offline", "evaluation", "validation", "newdata"),
        algos=lambda w: wf.offline_algos(CFG, w.env, int(w.seed), w.dataset),
        online=CELL + "/online",
        out=CELL + "/offline/{dataset}",
    log:
        CELL + "/logs/offline-{dataset}.log",
    benchmark:
        CELL + "/benchmarks/offline-{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=6000,
    shell:
        "{RUN} offline --config {CONFIG_FILE} --env {wildcards.env} --seed {wildcards.seed}"
        " --algo {params.algos} --dataset {wildcards.dataset} --data {input.data}"
        " --online {params.online} --out {params.out} > {log} 2>&1"
