# Online fine-tuning from the validated offline agent (SAC continuation is the online run itself).


rule finetune:
    input:
        unpack(finetune_inputs),
    output:
        curve=f"{CELL}/finetune/{{algo}}/curve.csv",
        summary=f"{CELL}/finetune/{{algo}}/finetune.json",
    params:
        settings=settings("budget", "finetune", "offline", "evaluation", "validation", "newdata", "analysis"),
        config=CONFIG_FILE,
        offline=lambda w, input: os.path.join(os.path.dirname(input.offline), wf.FINETUNE_SOURCES[w.algo]),
        out=parent("output.summary"),
        extended=lambda w: wf.extended_steps(CFG, wf.Job("finetune", w.env, int(w.seed), w.algo)),
    log:
        f"{CELL}/logs/finetune-{{algo}}.log",
    benchmark:
        f"{CELL}/benchmarks/finetune-{{algo}}.tsv"
    threads: 1
    resources:
        mem_mb=6000,
    conda:
        ENVIRONMENT
    shell:
        "replication finetune --config {params.config} --env {wildcards.env} --seed {wildcards.seed}"
        " --method {wildcards.algo} --offline {params.offline} --data {input.data}"
        " --extended-steps {params.extended} --out {params.out} > {log} 2>&1"
