# Offline learners on the cell's own data: offline validation and final-policy recommendation.


def offline_data(wildcards):
    dataset = wf.parse_dataset_key(CFG, wildcards.dataset)
    return str(wf.dataset_file(CFG, wildcards.env, int(wildcards.seed), dataset))


rule offline:
    input:
        data=offline_data,
        online=CELL + "/online/online.json",
    output:
        recommend=CELL + "/offline/{algo}/{dataset}/recommend.csv",
        summary=CELL + "/offline/{algo}/{dataset}/offline.json",
    params:
        settings=settings("budget", "offline", "evaluation", "validation", "newdata"),
        online=CELL + "/online",
        out=CELL + "/offline/{algo}/{dataset}",
    log:
        CELL + "/logs/offline-{algo}-{dataset}.log",
    benchmark:
        CELL + "/benchmarks/offline-{algo}-{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=6000,
    shell:
        "{RUN} offline --config {CONFIG_FILE} --env {wildcards.env} --seed {wildcards.seed}"
        " --algo {wildcards.algo} --dataset {wildcards.dataset} --data {input.data}"
        " --online {params.online} --out {params.out} > {log} 2>&1"
