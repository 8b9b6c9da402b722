# Aggregation: one tidy table of every cell's results, then tables, statistics, figures, the
# claims scorecard and the replication report. Figures and tables are marked for
# `snakemake --report results/<name>/report.html`.

from replication.aggregate import Expected
from replication.plotting import default_figures

FIGURES = default_figures(Expected.from_config(CFG))
BOOTSTRAP = yaml.safe_dump({"statistics": CFG["statistics"]})  # a param: a new setting reruns the intervals
TABLES = ["T1", "T2"] + (["T3"] if CFG["finetune"]["methods"] else [])


rule collect:
    input:
        [str(p) for p in wf.tidy_inputs(CFG)],
    output:
        OUT + "/tidy.csv",
    log:
        OUT + "/logs/collect.log",
    benchmark:
        OUT + "/benchmarks/collect.tsv"
    shell:
        "{RUN} collect --out {output} {input} > {log} 2>&1"


rule tables:
    input:
        OUT + "/tidy.csv",
    output:
        csv=[report(f"{OUT}/tables/{t}.csv", category="Tables", caption="captions/tables.rst") for t in TABLES],
        md=[f"{OUT}/tables/{t}.md" for t in TABLES],
        tex=[f"{OUT}/tables/{t}.tex" for t in TABLES],
    log:
        OUT + "/logs/tables.log",
    benchmark:
        OUT + "/benchmarks/tables.tsv"
    shell:
        "{RUN} tables --results {input} --out {OUT}/tables --config {CONFIG_FILE} --tables {TABLES} > {log} 2>&1"


rule statistics:
    input:
        OUT + "/tidy.csv",
    output:
        csv=report(OUT + "/statistics/aggregate.csv", category="Aggregate", caption="captions/statistics.rst"),
        md=OUT + "/statistics/aggregate.md",
    params:
        settings=BOOTSTRAP,
    log:
        OUT + "/logs/statistics.log",
    benchmark:
        OUT + "/benchmarks/statistics.tsv"
    shell:
        "{RUN} statistics --results {input} --out {OUT}/statistics --config {CONFIG_FILE} > {log} 2>&1"


rule figures:
    input:
        tidy=OUT + "/tidy.csv",
        statistics=OUT + "/statistics/aggregate.csv",
    output:
        png=[report(f"{OUT}/figures/{f}.png", category="Figures", caption="captions/figures.rst") for f in FIGURES],
        pdf=[f"{OUT}/figures/{f}.pdf" for f in FIGURES],
    log:
        OUT + "/logs/figures.log",
    benchmark:
        OUT + "/benchmarks/figures.tsv"
    shell:
        "{RUN} figures --results {input.tidy} --statistics {input.statistics} --out {OUT}/figures"
        " --config {CONFIG_FILE} > {log} 2>&1"


rule scorecard:
    input:
        tidy=OUT + "/tidy.csv",
        claims=os.path.join(workflow.basedir, "paper", "claims.yaml"),
    output:
        csv=report(OUT + "/scorecard/S1.csv", category="Scorecard", caption="captions/scorecard.rst"),
        md=OUT + "/scorecard/S1.md",
    params:
        settings=BOOTSTRAP,
    log:
        OUT + "/logs/scorecard.log",
    benchmark:
        OUT + "/benchmarks/scorecard.tsv"
    shell:
        "{RUN} scorecard --results {input.tidy} --claims {input.claims} --out {OUT}/scorecard"
        " --config {CONFIG_FILE} > {log} 2>&1"


rule report:
    input:
        tables=rules.tables.output.md,
        figures=rules.figures.output.png,
        statistics=rules.statistics.output.md,
        scorecard=rules.scorecard.output.md,
    output:
        OUT + "/report.md",
    log:
        OUT + "/logs/report.log",
    shell:
        "{RUN} report --out {output} --config {CONFIG_FILE} --tables {input.tables} --figures {input.figures}"
        " --statistics {input.statistics} --scorecard {input.scorecard} --benchmarks {OUT}/cells/*/seed*/benchmarks/*.tsv"
        " > {log} 2>&1"
