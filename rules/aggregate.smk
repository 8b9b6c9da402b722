# Aggregation: one tidy table of every cell's results, then tables, statistics, figures, the
# claims scorecard and the replication report. Figures and tables are marked for
# `snakemake --report results/<name>/report.html`.

# The plan's tables and figures: with config key claims, less what reads jobs it does not run (logged)
FIGURES = list(PLAN.figures)
TABLES = list(PLAN.tables)
BOOTSTRAP = yaml.safe_dump({"statistics": CFG["statistics"]})  # a param: a new setting reruns the intervals
STATISTICS = "statistics" not in PLAN.omitted
AGGREGATE_CSV = [f"{OUT}/statistics/aggregate.csv"] if STATISTICS else []  # F5 reads it
REPORT_INPUTS = {  # what the report embeds: the products this plan makes
    "tables": [f"{OUT}/tables/{t}.md" for t in TABLES],
    "figures": [f"{OUT}/figures/{f}.png" for f in FIGURES],
    "statistics": [f"{OUT}/statistics/aggregate.md"] if STATISTICS else [],
}
FIGURE_CAPTION = os.path.abspath(f"{OUT}/captions/figures.rst")  # captions/figures.rst + the run's commit (provenance.smk)


rule collect:
    input:
        PLAN.tidy_inputs(),
    output:
        f"{OUT}/tidy.csv",
    params:
    log:
        f"{OUT}/logs/collect.log",
    benchmark:
        f"{OUT}/benchmarks/collect.tsv"
    conda:
        ENVIRONMENT
    shell:
        "replication collect --out {output} {input} > {log} 2>&1"


if TABLES:

    rule tables:
        input:
            f"{OUT}/tidy.csv",
        output:
            csv=[report(f"{OUT}/tables/{t}.csv", category="Tables", caption="captions/tables.rst") for t in TABLES],
            md=[f"{OUT}/tables/{t}.md" for t in TABLES],
            tex=[f"{OUT}/tables/{t}.tex" for t in TABLES],
        params:
            config=CONFIG_FILE,
            tables=TABLES,
            out=lambda w, output: os.path.dirname(output.md[0]),
        log:
            f"{OUT}/logs/tables.log",
        benchmark:
            f"{OUT}/benchmarks/tables.tsv"
        conda:
            ENVIRONMENT
        shell:
            "replication tables --results {input} --out {params.out} --config {params.config}"
            " --tables {params.tables} > {log} 2>&1"


if STATISTICS:

    rule statistics:
        input:
            f"{OUT}/tidy.csv",
        output:
            csv=report(f"{OUT}/statistics/aggregate.csv", category="Aggregate", caption="captions/statistics.rst"),
            md=f"{OUT}/statistics/aggregate.md",
        params:
            settings=BOOTSTRAP,
            config=CONFIG_FILE,
            out=parent("output.md"),
        log:
            f"{OUT}/logs/statistics.log",
        benchmark:
            f"{OUT}/benchmarks/statistics.tsv"
        conda:
            ENVIRONMENT
        shell:
            "replication statistics --results {input} --out {params.out} --config {params.config} > {log} 2>&1"


if FIGURES:

    rule figures:
        input:
            tidy=f"{OUT}/tidy.csv",
            statistics=AGGREGATE_CSV,
        output:
            png=[report(f"{OUT}/figures/{f}.png", category="Figures", caption=FIGURE_CAPTION) for f in FIGURES],
            pdf=[f"{OUT}/figures/{f}.pdf" for f in FIGURES],
        params:
            config=CONFIG_FILE,
            out=lambda w, output: os.path.dirname(output.png[0]),
        log:
            f"{OUT}/logs/figures.log",
        benchmark:
            f"{OUT}/benchmarks/figures.tsv"
        conda:
            ENVIRONMENT
        shell:
            "replication figures --results {input.tidy}"
            + (" --statistics {input.statistics}" if STATISTICS else "")
            + " --out {params.out}"
            " --config {params.config} > {log} 2>&1"


rule scorecard:
    input:
        tidy=f"{OUT}/tidy.csv",
        claims=os.path.join(workflow.basedir, "paper", "claims.yaml"),
    output:
        csv=report(f"{OUT}/scorecard/S1.csv", category="Scorecard", caption="captions/scorecard.rst"),
        md=f"{OUT}/scorecard/S1.md",
    params:
        settings=BOOTSTRAP,
        config=CONFIG_FILE,
        out=parent("output.md"),
    log:
        f"{OUT}/logs/scorecard.log",
    benchmark:
        f"{OUT}/benchmarks/scorecard.tsv"
    conda:
        ENVIRONMENT
    shell:
        "replication scorecard --results {input.tidy} --claims {input.claims} --out {params.out}"
        " --config {params.config} > {log} 2>&1"


rule report:
    input:
        **REPORT_INPUTS,
        scorecard=rules.scorecard.output.md,
        provenance=f"{OUT}/provenance.json",
        videos=VIDEOS,  # rules/videos.smk
    output:
        f"{OUT}/report.md",
    params:
        config=CONFIG_FILE,
        benchmarks=f"{OUT}/cells/*/seed*/benchmarks/*.tsv",  # a glob the shell expands
        finetune=f"{OUT}/cells/*/seed*/finetune/calql/finetune.json",  # likewise; unmatched: skipped
    log:
        f"{OUT}/logs/report.log",
    conda:
        ENVIRONMENT
    shell:
        "replication report --out {output} --config {params.config} --tables {input.tables} --figures {input.figures}"
        + (" --statistics {input.statistics}" if STATISTICS else "")
        + " --scorecard {input.scorecard} --provenance {input.provenance}"
        " --videos {input.videos}"
        " --benchmarks {params.benchmarks}"
        " --finetune-summaries {params.finetune} > {log} 2>&1"
