"""Mid-run checkpoints of the offline and fine-tuning jobs (the online phase keeps its own, in
:mod:`replication.agents.online`), and the stage where the online phase keeps its pause files.

An offline job saves, every ``offline.checkpoint_interval`` gradient steps, its learner (networks,
target networks, optimisers, step counter), the validation results so far, the best checkpoint's
files written so far and the RNG states; a fine-tuning job saves, every
``finetune.checkpoint_interval`` env steps, its whole agent (learners as d3rlpy model files with
their optimisers and step counters; replay buffers, samplers and their generators pickled, the
offline dataset's episodes by reference), the training environment mid-episode (simulator state,
step counter, its RNGs), the ledger, the curve so far and the RNG states. A restarted job finds
the checkpoint of the same settings and inputs (:func:`replication.agents.checkpoint.job_key`) and
continues from it; on the CPU it ends with the same outputs as an uninterrupted one. Checkpoints
are written atomically (:func:`replication.agents.checkpoint.write_checkpoint`) and removed when the job
finishes.

No job trusts a file that Snakemake may delete. Snakemake deletes the declared outputs of a job that
did not finish (killed, crashed, out of disk) before it runs the job again, and a resumed job does
not pass again the points where it wrote them. So a job writes its declared outputs only when it
ends, from what it kept outside them: the offline and fine-tuning jobs from their loop state in the
checkpoint; the online phase from its *stage* (``<online>/stage/pause_<T_k>/``), where each pause's
files (dataset, validation, policies) are sealed, durably and with the job's key, before the
checkpoint that follows the pause is written. When the run ends they are published into
``pause_<T_k>/`` (hard links: no second copy on disk), and the stage goes with the checkpoint.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import pickle
import shutil
from pathlib import Path
from typing import Any

from replication.agents import checkpoint
from replication.io import fsync_path, link_or_copy, read_json, remove_tree, write_json

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
STAGE_DIR = "stage"
SEAL = "sealed.json"  # written last into a stage (a pause's files, a finished run's): the job's key
OFFLINE_KEPT = ("learnable_best.d3", "policy_best.pt")  # written mid-run, restored with the checkpoint


def boundaries(stops: list[int], interval: int, total: int) -> list[int]:
    """Where a loop of ``total`` steps stops: its own ``stops`` and every ``interval`` steps before ``total``."""
    if interval < 1:
        raise ValueError(f"checkpoint interval must be a positive integer, got {interval}")
    return sorted(set(stops) | set(range(interval, total, interval)))


def due(step: int, interval: int, total: int) -> bool:
    """A checkpoint is due after ``step`` (never at the end: the job's outputs follow at once)."""
    return step % interval == 0 and step < total


def log_saved(what: str, step: int, meta: dict[str, Any]) -> None:
    log.info("%s checkpoint at step %d: %.1f MB in %.2f s", what, step, meta["bytes"] / 1e6, meta["seconds"])


# ---- the online phase's stage --------------------------------------------------------------------


def staged_pause(out_dir: Path | str, step: int) -> Path:
    """Where the online run in ``out_dir`` stages the files of pause ``step``."""
    return Path(out_dir) / STAGE_DIR / f"pause_{step}"


def new_stage(staged: Path) -> Path:
    """An empty directory beside ``staged`` to write its files into, before :func:`seal_stage`."""
    tmp = staged.with_name(staged.name + ".tmp")
    remove_tree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def seal_stage(tmp: Path, staged: Path, key: str, **fields: Any) -> None:
    """Make the files written into ``tmp`` the staged files ``staged`` of the job with ``key``: sealed
    (with the key and ``fields``), flushed to disk, then renamed into place (a kill leaves the old stage
    or the new, never a part)."""
    write_json(tmp / SEAL, {"key": key, **fields})
    for f in tmp.iterdir():
        fsync_path(f)
    fsync_path(tmp)
    remove_tree(staged)
    tmp.rename(staged)
    fsync_path(staged.parent)


def publish_stage(out_dir: Path | str, step: int, target: Path, key: str) -> None:
    """Publish the staged files of pause ``step`` into ``target`` (each atomically)."""
    staged = staged_pause(out_dir, step)
    seal = staged / SEAL
    if not seal.exists() or read_json(seal).get("key") != key:
        raise RuntimeError(
            f"the files of pause {step} are not staged in {staged} (removed by hand?): remove "
            f"{Path(out_dir) / CHECKPOINT_DIR} and run the job again; it will start from step 0"
        )
    target.mkdir(parents=True, exist_ok=True)
    for f in sorted(staged.iterdir()):
        if f.name != SEAL:
            link_or_copy(f, target / f.name)


def clear_stage(out_dir: Path | str) -> None:
    remove_tree(Path(out_dir) / STAGE_DIR)


# ---- finished jobs whose siblings did not finish ---------------------------------------------------
#
# A batch job (one per cell and stage) declares every variant's outputs; killed midway, Snakemake deletes
# all of them, the finished variants' too. A finished offline learner or fine-tuning run therefore keeps
# its record outside the declared outputs, with its key and the fingerprint of the code that made it:
# the rerun takes it back (same settings, inputs and code give the same results) instead of training
# again. After a change to the training code the fingerprint differs and the work is redone, as
# ``--forcerun`` asks.

FINISHED_DIR = "finished"


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A digest of the package's source files (what a result was computed with)."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def made_here(record: dict[str, Any], key: str, key_field: str = "key") -> bool:
    """``record`` (a finished job's) was made with ``key`` and the code running now."""
    return record.get(key_field) == key and record.get("code") == code_fingerprint()


def keep_finished(out_dir: Path | str, key: str, names: tuple[str, ...]) -> None:
    """Keep the declared outputs ``names`` of the job finished in ``out_dir`` (hard links), with its key."""
    kept = Path(out_dir) / FINISHED_DIR
    tmp = new_stage(kept)
    for name in names:
        link_or_copy(Path(out_dir) / name, tmp / name)
    seal_stage(tmp, kept, key, code=code_fingerprint())


def take_finished(out_dir: Path | str, key: str, names: tuple[str, ...]) -> bool:
    """Put back the kept outputs of a job finished in ``out_dir`` with ``key`` and this code; ``False``
    (and nothing kept any more) if there is no such record."""
    kept = Path(out_dir) / FINISHED_DIR
    seal = kept / SEAL
    record = read_json(seal) if seal.exists() else {}
    if not made_here(record, key):
        remove_tree(kept)
        return False
    for name in names:
        link_or_copy(kept / name, Path(out_dir) / name)
    log.info("finished before with the same settings, inputs and code: outputs put back from %s", kept)
    return True


# ---- offline jobs --------------------------------------------------------------------------------


def save_offline(directory: Path, key: str, learner, out_dir: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Checkpoint an offline job: learner, loop ``state`` (picklable), best files so far, RNG states."""

    def fill(tmp: Path) -> dict[str, Any]:
        learner.save_model(str(tmp / "learner.pt"))
        for name in OFFLINE_KEPT:
            if (out_dir / name).exists():
                shutil.copyfile(out_dir / name, tmp / name)
        blob = {"state": state, "grad_step": int(learner.grad_step), "rng": checkpoint.rng_states()}
        (tmp / "state.pkl").write_bytes(pickle.dumps(blob, protocol=pickle.HIGHEST_PROTOCOL))
        return {"grad_step": int(learner.grad_step)}

    meta = checkpoint.write_checkpoint(directory, key, fill)
    log_saved("offline", meta["grad_step"], meta)
    return meta


def restore_offline(directory: Path, key: str, learner, out_dir: Path) -> dict[str, Any] | None:
    """Load the offline job's checkpoint into the built ``learner``, put its best files back into
    ``out_dir`` and restore the RNG states; the loop state saved with it, or ``None``."""
    found = checkpoint.find_checkpoint(directory, key)
    if found is None:
        return None
    path, meta = found
    blob = pickle.loads((path / "state.pkl").read_bytes())
    learner.load_model(str(path / "learner.pt"))
    learner.set_grad_step(blob["grad_step"])
    for name in OFFLINE_KEPT:
        if (path / name).exists():
            shutil.copyfile(path / name, out_dir / name)
    checkpoint.set_rng_states(blob["rng"])
    log.info("offline job resumed from its checkpoint at gradient step %d", blob["grad_step"])
    return blob["state"]


# ---- fine-tuning jobs ----------------------------------------------------------------------------


def buffer_episodes(agent: Any) -> list[Any]:
    """The episodes in the d3rlpy replay buffers of ``agent`` (its attributes), in a fixed order.

    Taken before the first online step, these are the offline dataset's episodes: a checkpoint
    refers to them (the job rebuilds them from its dataset file) instead of storing them again.
    """
    buffers = [v for _, v in sorted(vars(agent).items()) if hasattr(v, "episodes") and hasattr(v, "sample_transition")]
    return [episode for b in buffers for episode in b.episodes]


def agent_learners(agent: Any) -> list[Any]:
    """The d3rlpy learners of ``agent``: its attributes and theirs (PEX's policy set), in a fixed order.

    A checkpoint stores them with d3rlpy's own ``save_model`` (networks, targets, optimisers) and
    refers to them from the pickle, so that no learner internals (e.g. CUDA graphs) are pickled.
    """
    from d3rlpy.base import LearnableBase

    found: dict[int, Any] = {}
    for _, value in sorted(vars(agent).items()):
        for obj in (value, *(v for _, v in sorted(getattr(value, "__dict__", {}).items()))):
            if isinstance(obj, LearnableBase):
                found.setdefault(id(obj), obj)
    return list(found.values())


def save_agent(
    directory: Path, key: str, what: str, position: dict[str, Any], objects: dict[str, Any], agent: Any, episodes: list
) -> dict[str, Any]:
    """Checkpoint live ``objects`` (the agent among them; simulators included,
    :func:`replication.agents.checkpoint.dumps`) and the RNG states, in one pickle so that objects shared
    between them stay shared. The agent's learners go to d3rlpy model files and its offline
    ``episodes`` stay out: the pickle refers to both. ``position`` (``step`` and more) goes into the meta."""
    learners = agent_learners(agent)

    def fill(tmp: Path) -> dict[str, Any]:
        for i, learner in enumerate(learners):
            learner.save_model(str(tmp / f"learner_{i}.pt"))
        blob = {"objects": objects, "rng": checkpoint.rng_states(), "grad_steps": [int(x.grad_step) for x in learners]}
        (tmp / "state.pkl").write_bytes(checkpoint.dumps(blob, [*episodes, *learners]))
        return dict(position)

    meta = checkpoint.write_checkpoint(directory, key, fill)
    log_saved(what, position["step"], meta)
    return meta


def restore_agent(directory: Path, key: str, agent: Any, episodes: list) -> dict[str, Any] | None:
    """The objects of :func:`save_agent` (RNG states restored), or ``None`` without a checkpoint.

    ``agent``: a freshly built agent of the same job, whose learners receive the saved states;
    ``episodes``: its offline episodes (:func:`buffer_episodes`).
    """
    found = checkpoint.find_checkpoint(directory, key)
    if found is None:
        return None
    path, meta = found
    learners = agent_learners(agent)
    for i, learner in enumerate(learners):
        learner.load_model(str(path / f"learner_{i}.pt"))
    blob = checkpoint.loads((path / "state.pkl").read_bytes(), [*episodes, *learners])
    for learner, grad_step in zip(learners, blob["grad_steps"], strict=True):
        learner.set_grad_step(grad_step)
    checkpoint.set_rng_states(blob["rng"])
    log.info("resumed from the checkpoint at step %d", meta["step"])
    return blob["objects"]
