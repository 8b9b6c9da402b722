# Input and param functions shared by the rules (kept apart from the rules, as Snakemake's lint asks).
# Command lines and paths come from the run's Plan (PLAN, replication.plan.plan), built once.


ONLINE_SUMMARY = PLAN.layout.outputs("online", "{env}", "{seed}")["summary"]
# Estimated CPU seconds of each cell, all its jobs (replication.plan.estimate): the scheduling process's
# priorities; a job's own Snakemake (a cluster job) schedules nothing and skips the estimate
CELL_SECONDS = estimate.cell_seconds(CFG, PLAN) if workflow.is_main_process else {}


def longest_cell_first(wildcards):
    """A priority: the cell's estimated CPU seconds, so that the jobs of the longest cells start first
    and no core waits alone on one long cell at the end of a run (LPT order). Changes no result."""
    return round(CELL_SECONDS.get((wildcards.env, int(wildcards.seed)), 0.0))


def settings(*sections):
    """The config sections a job depends on (a param), so that editing others does not rerun it. Never
    the list of seeds: a job's result depends on its own seed only, so adding seeds reruns nothing."""

    def get(wildcards):
        # without the settings that change no result (wf.NO_RESULT): editing them reruns nothing
        picked = {s: wf.without_no_result(s, CFG[s]) for s in sections}
        picked["cell"] = wildcards.env
        picked["env_options"] = CFG["env_options"].get(wf.parse_cell(wildcards.env).env, {})
        return yaml.safe_dump(picked, sort_keys=True)

    return get


def variant(wildcards):
    """The variant of a per-variant job: its dataset key or fine-tuning method ("" for online)."""
    return getattr(wildcards, "dataset", "") or getattr(wildcards, "algo", "")


def job_arguments(rule):
    """A param: the job's `replication` arguments, from the plan (the batch rules run the same)."""
    return lambda w: PLAN.job_for(rule, w.env, w.seed, variant(w)).command_line()


# A batch job runs the command lines its cell's plan gives when it runs (`replication batch --cell`), and
# holds as a param those of the plan without a claims cut: a rerun trigger that edits of the settings
# change and a cut does not, so that narrowing `claims` (or a sequential study's next stage, which
# plans only its open claims) reruns none of the cells that already ran more than the cut keeps.
UNCUT_PLAN = PLAN if PLAN.claims is None else Plan.build(claims.uncut(CFG))


def cell_commands(rule):
    """A param: the quoted command lines of the uncut plan's batch job of ``rule`` (``cell``: the whole cell)."""
    return lambda w: " ".join(shlex.quote(job.command_line()) for job in UNCUT_PLAN.batch_jobs(rule, w.env, w.seed))


def batch_shell(rule):
    """The shell command of a batch job of ``rule``."""
    return f"replication batch --cell {rule} --config {CONFIG_FILE} --env {{wildcards.env}} --seed {{wildcards.seed}} > {{log}} 2>&1"


def offline_data(wildcards):
    """The dataset file an offline job trains on."""
    return PLAN.dataset_file(wildcards.env, wildcards.seed, PLAN.dataset(wildcards.dataset))


def finetune_inputs(wildcards):
    """The offline summary (its learners) and the dataset a fine-tuning job starts from."""
    env, seed = wildcards.env, wildcards.seed
    return {
        "offline": PLAN.layout.outputs("offline", env, seed, PLAN.finetune_key)["summary"],
        "data": PLAN.dataset_file(env, seed, PLAN.finetune_dataset),
    }


def batch_offline_data(wildcards):
    """Every dataset file the offline job of a cell trains on."""
    return [
        PLAN.dataset_file(wildcards.env, wildcards.seed, PLAN.dataset(key)) for key in PLAN.batches["offline"]
    ]


def parent(name):
    """The directory of the input or output file ``name`` (e.g. ``"output.summary"``), as a param."""
    kind, key = name.split(".")

    def get(wildcards, input, output):
        return os.path.dirname(getattr({"input": input, "output": output}[kind], key))

    return get


def parallel_jobs():
    """How many jobs may run at once: --jobs on a cluster, --cores on one machine (a job per core)."""
    return workflow.nodes if workflow.non_local_exec else workflow.cores
