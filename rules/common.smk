# Input and param functions shared by the rules (kept apart from the rules, as Snakemake's lint asks).


def settings(*sections):
    """The config sections a job depends on (a param), so that editing others does not rerun it."""

    def get(wildcards):
        picked = {s: CFG[s] for s in sections}
        picked["cell"] = wildcards.env
        picked["env_options"] = CFG["env_options"].get(wf.parse_cell(wildcards.env).env, {})
        return yaml.safe_dump(picked, sort_keys=True)

    return get


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
