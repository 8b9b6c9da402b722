# Input and param functions shared by the rules (kept apart from the rules, as Snakemake's lint asks).


# Settings that change no result (how often a job checkpoints): editing them reruns nothing.
NO_RESULT = {"offline": ("checkpoint_interval",), "finetune": ("checkpoint_interval",)}


def settings(*sections):
    """The config sections a job depends on (a param), so that editing others does not rerun it."""

    def get(wildcards):
        picked = {s: drop(CFG[s], NO_RESULT.get(s, ())) for s in sections}
        picked["cell"] = wildcards.env
        picked["env_options"] = CFG["env_options"].get(wf.parse_cell(wildcards.env).env, {})
        return yaml.safe_dump(picked, sort_keys=True)

    return get


def drop(section, keys):
    return {k: v for k, v in section.items() if k not in keys} if isinstance(section, dict) else section


def offline_data(wildcards):
    """The dataset file an offline job trains on."""
    dataset = wf.parse_dataset_key(CFG, wildcards.dataset)
    return str(wf.dataset_file(CFG, wildcards.env, int(wildcards.seed), dataset))


def finetune_inputs(wildcards):
    """The offline summary (its learners) and the dataset a fine-tuning job starts from."""
    cell = f"{OUT}/cells/{wildcards.env}/seed{wildcards.seed}"
    return {
        "offline": f"{cell}/offline/{wf.dataset_key(wf.finetune_dataset(CFG))}/offline.json",
        "data": str(wf.dataset_file(CFG, wildcards.env, int(wildcards.seed), wf.finetune_dataset(CFG))),
    }


def parent(name):
    """The directory of the input or output file ``name`` (e.g. ``"output.summary"``), as a param."""
    kind, key = name.split(".")

    def get(wildcards, input, output):
        return os.path.dirname(getattr({"input": input, "output": output}[kind], key))

    return get


# --- batch_jobs: the command lines one job of a cell runs, one per variant (mirroring the rules' shells)


def _cell_path(wildcards):
    return f"{OUT}/cells/{wildcards.env}/seed{wildcards.seed}"


def _batch_line(name, wildcards, **options):
    args = [name, "--config", CONFIG_FILE, "--env", wildcards.env, "--seed", wildcards.seed]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return shlex.quote(shlex.join(args))


def batch_commands(stage):
    """A param: the quoted command lines of the cell's variants of ``stage``, for `replication batch`."""

    def get(wildcards):
        cell, seed = _cell_path(wildcards), int(wildcards.seed)
        lines = []
        for key in BATCH[stage]:  # rules/batch.smk
            if stage == "newdata":
                lines.append(
                    _batch_line(
                        "newdata", wildcards, online=f"{cell}/online", dataset=key, out=f"{cell}/newdata/{key}.h5"
                    )
                )
            elif stage == "offline":
                data = wf.dataset_file(CFG, wildcards.env, seed, wf.parse_dataset_key(CFG, key))
                algos = wf.offline_algos(CFG, wildcards.env, seed, key)
                lines.append(
                    _batch_line(
                        "offline",
                        wildcards,
                        algo=algos,
                        dataset=key,
                        data=data,
                        online=f"{cell}/online",
                        out=f"{cell}/offline/{key}",
                    )
                )
            else:
                inputs = finetune_inputs(wildcards)
                offline = os.path.join(os.path.dirname(inputs["offline"]), wf.FINETUNE_SOURCES[key])
                extended = wf.extended_steps(CFG, wf.Job("finetune", wildcards.env, seed, key))
                lines.append(
                    _batch_line(
                        "finetune",
                        wildcards,
                        method=key,
                        offline=offline,
                        data=inputs["data"],
                        extended_steps=extended,
                        out=f"{cell}/finetune/{key}",
                    )
                )
        return " ".join(lines)

    return get


def batch_offline_data(wildcards):
    """Every dataset file the offline job of a cell trains on."""
    seed = int(wildcards.seed)
    return [
        str(wf.dataset_file(CFG, wildcards.env, seed, wf.parse_dataset_key(CFG, key)))
        for key in BATCH["offline"]
    ]


def parallel_jobs():
    """How many jobs may run at once: --jobs on a cluster, --cores on one machine (a job per core)."""
    return workflow.nodes if workflow.non_local_exec else workflow.cores
