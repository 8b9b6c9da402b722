# Rollout videos (config `videos`): one job renders every environment's clips, one env at a time
# (replication.analysis.videos), after the cells' results; its HTML pages show the clips in the Snakemake report.

VIDEOS_MADE = CFG["videos"]["enabled"] and "videos" not in PLAN.omitted  # a cut plan may lack their jobs
VIDEOS = [f"{OUT}/videos"] if VIDEOS_MADE else []  # inputs of the report and provenance


if VIDEOS_MADE:

    rule videos:
        input:
            tidy=f"{OUT}/tidy.csv",
        output:
            report(
                directory(f"{OUT}/videos"),
                patterns=["{name}.html"],
                category="Rollout videos",
                caption="captions/videos.rst",
            ),
        params:
            config=CONFIG_FILE,
            settings=yaml.safe_dump({"videos": CFG["videos"]}),  # a param: new video settings rerender
        log:
            f"{OUT}/logs/videos.log",
        benchmark:
            f"{OUT}/benchmarks/videos.tsv"
        conda:
            ENVIRONMENT
        shell:
            "replication videos --config {params.config} --tidy {input.tidy} --out {output} > {log} 2>&1"
