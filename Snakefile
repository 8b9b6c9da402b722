# The replication workflow: every environment x variant x seed cell, then the aggregation.
#
#   snakemake --cores all                                   # default (small) config
#   snakemake --cores all --configfile config/paper.yaml    # the full study
#   snakemake --profile profiles/slurm --configfile config/paper.yaml
#
# The run is planned once (replication.plan.plan.Plan: every job with its command line and paths);
# rules are thin calls of the `replication` command line the plan gives them. The run's config
# (config/defaults.yaml + your file) is validated before any job.

import re
import shlex

import yaml
from replication.plan import config as rconfig
from replication.plan import claims, disk, estimate, runlock
from replication.plan import workflow as wf
from replication.plan.plan import Plan
from replication.plan.vocabulary import FINETUNE_METHODS, OFFLINE_ALGOS
from replication.io import write_text
from snakemake.logging import logger
from snakemake.utils import min_version

min_version("9.0")

# Without --configfile, the default config; --config key=value overrides still apply on top.
if not workflow.overwrite_configfiles:
    config = rconfig.deep_merge(rconfig.read_yaml(os.path.join(workflow.basedir, "config", "config.yaml")), config)
# --config videos='{"enabled": true}': Snakemake leaves the scalars inside such a value strings; typed back
config = rconfig.deep_merge(config, rconfig.command_line_overrides(workflow.config_settings.config))
try:
    CFG = rconfig.resolve(config)
except ValueError as error:
    raise WorkflowError(f"invalid config: {error}") from None

PLAN = Plan.build(CFG)
OUT = PLAN.layout.results
CONFIG_FILE = PLAN.layout.config_file
if workflow.is_main_process and PLAN.claims is not None:  # config key claims: what the cut leaves out
    logger.info(f"claims {', '.join(PLAN.claims)}: only the jobs their tests read are planned")
    for _why in PLAN.omitted.values():
        logger.info(_why)

# One live run per results directory: a kernel lock (flock) that dies with its holder, however it
# dies, so the same command resumes after any kill (replication.plan.runlock; the profiles turn
# Snakemake's own lock off). Refused in onstart, so that dry runs still work beside a live run.
RUN_LOCK = runlock.acquire(OUT) if workflow.is_main_process else None
if RUN_LOCK is not None and RUN_LOCK.held:
    for _stale in runlock.clear_stale_snakemake_locks(RUN_LOCK):
        logger.info(f"removed {_stale}: a Snakemake lock of a run of this config that is gone")
elif RUN_LOCK is not None:
    logger.warning(RUN_LOCK.refusal())

# The resolved config that every job reads; rewritten only when it changes, and never under a live
# run of the same results directory (its jobs read it).
_resolved = yaml.safe_dump(CFG, sort_keys=False)
_may_write = RUN_LOCK is None or RUN_LOCK.held
if _may_write and (not os.path.exists(CONFIG_FILE) or open(CONFIG_FILE).read() != _resolved):
    write_text(CONFIG_FILE, _resolved)

# Jobs call the package's command line as `replication`: the interpreter running Snakemake (the
# project's .venv), or the job's own `python` when Snakemake deploys the software (--sdm conda,
# environment.yml). A shell function rather than a param, so moving the project reruns nothing.
_python = "python" if workflow.deployment_settings.deployment_method else shlex.quote(sys.executable)
shell.prefix(f'set -euo pipefail; replication() {{{{ {_python} -m replication "$@"; }}}}; ')  # braces: doubled twice
ENVIRONMENT = "../environment.yml"  # the conda environment of every rule (paths relative to rules/)

wildcard_constraints:
    env=r"[a-z0-9-]+(\+[a-z_]+=[a-z0-9.]+(,[a-z_]+=[a-z0-9.]+)*)?",
    seed=r"\d+",
    algo="|".join(dict.fromkeys((*OFFLINE_ALGOS, *FINETUNE_METHODS))),
    dataset=r"[a-z0-9.-]+",


include: "rules/common.smk"
include: "rules/online.smk"
include: "rules/offline.smk"
include: "rules/finetune.smk"
include: "rules/videos.smk"
include: "rules/aggregate.smk"
include: "rules/provenance.smk"


if CFG["batch_jobs"]:

    include: "rules/batch.smk"


onstart:
    if RUN_LOCK is not None and not RUN_LOCK.held:
        raise WorkflowError(RUN_LOCK.refusal())
    # no run dies of a full disk: refused before any job starts (replication.plan.disk)
    if CFG["check_disk"] and (problem := disk.check_free_space(CFG, OUT, parallel_jobs(), PLAN.grid())):
        raise WorkflowError(problem)


rule all:
    input:
        f"{OUT}/report.md",
    default_target: True
