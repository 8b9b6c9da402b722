# Aggregation: one tidy table of every cell's results.


rule aggregate:
    input:
        [str(p) for p in wf.tidy_inputs(CFG) if "/finetune/" not in str(p)],
    output:
        OUT + "/tidy.csv",
    log:
        OUT + "/logs/aggregate.log",
    benchmark:
        OUT + "/benchmarks/aggregate.tsv"
    shell:
        "{RUN} collect --out {output} {input} > {log} 2>&1"
