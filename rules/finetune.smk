# Online fine-tuning from the validated offline agent (SAC continuation is the online run itself).

FT_DATASET = wf.dataset_key(wf.finetune_dataset(CFG))


def finetune_inputs(wildcards):
    dataset = wf.finetune_dataset(CFG)
    return {
        "offline": f"{OUT}/cells/{wildcards.env}/seed{wildcards.seed}/offline/{FT_DATASET}/offline.json",
        "data": str(wf.dataset_file(CFG, wildcards.env, int(wildcards.seed), dataset)),
    }


rule finetune:
    input:
        unpack(finetune_inputs),
    output:
        curve=CELL + "/finetune/{algo}/curve.csv",
        summary=CELL + "/finetune/{algo}/finetune.json",
    params:
        settings=settings("budget", "finetune", "offline", "evaluation", "validation", "newdata", "analysis"),
        offline=lambda w, input: os.path.join(os.path.dirname(input.offline), wf.FINETUNE_SOURCES[w.algo]),
        out=CELL + "/finetune/{algo}",
        extended=lambda w: wf.extended_steps(CFG, wf.Job("finetune", w.env, int(w.seed), w.algo)),
    log:
        CELL + "/logs/finetune-{algo}.log",
    benchmark:
        CELL + "/benchmarks/finetune-{algo}.tsv"
    threads: 1
    resources:
        mem_mb=6000,
    shell:
        "{RUN} finetune --config {CONFIG_FILE} --env {wildcards.env} --seed {wildcards.seed}"
        " --method {wildcards.algo} --offline {params.offline} --data {input.data}"
        " --extended-steps {params.extended} --out {params.out} > {log} 2>&1"
