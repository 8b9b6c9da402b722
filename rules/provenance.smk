# Provenance: results/<name>/provenance.json (commit, dirty tree, config hash, versions, machine,
# command, start, end, wall time; every earlier invocation; the commits of the jobs that trained the
# agents) after every result and before the report, and the HTML report's figure caption stamped with
# the training and regenerating commits and the config (replication.plan.provenance).

from replication.plan import provenance as prov

if workflow.is_main_process:
    prov.mark_start()  # the run's start and command, inherited by its local jobs
    if _may_write:  # Snakemake deletes provenance.json before its job: its invocations are kept first
        prov.keep_earlier(f"{OUT}/provenance.json")


localrules:
    provenance,


rule provenance:
    input:
        *(rules.tables.output if TABLES else []),
        *(rules.statistics.output if STATISTICS else []),
        *(rules.figures.output if FIGURES else []),
        rules.scorecard.output,
        VIDEOS,
    output:
        json=f"{OUT}/provenance.json",
        caption=FIGURE_CAPTION,
    params:
        config=CONFIG_FILE,
        source=os.path.join(workflow.basedir, "rules", "captions", "figures.rst"),
    log:
        f"{OUT}/logs/provenance.log",
    conda:
        ENVIRONMENT
    shell:
        "replication provenance --config {params.config} --out {output.json}"
        " --caption {params.source} {output.caption} > {log} 2>&1"
