# The replication workflow: every environment x variant x seed cell, then the aggregation.
#
#   snakemake --cores all                                   # default (small) config
#   snakemake --cores all --configfile config/paper.yaml    # the full study
#   snakemake --profile profiles/slurm --configfile config/paper.yaml
#
# The grid is defined once, in replication.workflow; rules are thin calls of the `replication`
# command line. The run's config (config/defaults.yaml + your file) is validated before any job.

from replication import config as rconfig
from replication import workflow as wf
from replication.io import write_text

import yaml
from snakemake.utils import min_version

min_version("9.0")

# Without --configfile, the default config; --config key=value overrides still apply on top.
if not workflow.overwrite_configfiles:
    config = rconfig.deep_merge(rconfig.read_yaml(os.path.join(workflow.basedir, "config", "config.yaml")), config)
try:
    CFG = rconfig.resolve(config)
except ValueError as error:
    raise WorkflowError(f"invalid config: {error}") from None

OUT = str(wf.results_dir(CFG))
CONFIG_FILE = f"{OUT}/config.yaml"

# The resolved config that every job reads; rewritten only when it changes.
_resolved = yaml.safe_dump(CFG, sort_keys=False)
if not os.path.exists(CONFIG_FILE) or open(CONFIG_FILE).read() != _resolved:
    write_text(CONFIG_FILE, _resolved)

CELL = OUT + "/cells/{env}/seed{seed}"
RUN = f"{sys.executable} -m replication"  # the package's CLI, from the interpreter running the workflow

wildcard_constraints:
    env=r"[a-z0-9-]+(\+[a-z_]+=[a-z0-9.]+(,[a-z_]+=[a-z0-9.]+)*)?",
    seed=r"\d+",
    algo="iql|cql|calql|pex",
    dataset=r"[a-z0-9.-]+",


def settings(*sections):
    """The config sections a rule depends on, as a param: editing others does not rerun it."""

    def get(wildcards):
        picked = {s: CFG[s] for s in sections}
        picked["cell"] = wildcards.env
        picked["env_options"] = CFG["env_options"].get(wf.parse_cell(wildcards.env).env, {})
        return yaml.safe_dump(picked, sort_keys=True)

    return get


include: "rules/online.smk"
include: "rules/offline.smk"
include: "rules/finetune.smk"
include: "rules/aggregate.smk"


rule all:
    input:
        OUT + "/report.md",
    default_target: True
