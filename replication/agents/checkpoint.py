"""Exact snapshots of live Python objects that hold simulators, for resumable runs, and the
checkpoint directories of resumable jobs.

Gymnasium's MuJoCo environments pickle through ``EzPickle``, which stores only constructor
arguments and builds a fresh env on load: the simulator state, the episode's step counter and
the RNGs would be lost. :func:`dumps` pickles such objects by their full ``__dict__`` instead
(MuJoCo's ``MjModel``/``MjData`` pickle natively), so a restored env continues its episode
exactly where it was.

Mid-run checkpoints of the offline and fine-tuning jobs (the online phase keeps its own, in
:mod:`replication.agents.online`), and the stage where the online phase keeps its pause files.

An offline job saves, every ``offline.checkpoint_interval`` gradient steps, its learner (networks,
target networks, optimisers, step counter), the validation results so far, the best checkpoint's
files written so far and the RNG states; a fine-tuning job saves, every
``finetune.checkpoint_interval`` env steps, its whole agent (learners as d3rlpy model files with
their optimisers and step counters; replay buffers, samplers and their generators pickled, the
offline dataset's episodes by reference), the training environment mid-episode (simulator state,
step counter, its RNGs), the ledger, the curve so far and the RNG states. A restarted job finds
the checkpoint of the same settings and inputs (:func:`job_key`) and
continues from it; on the CPU it ends with the same outputs as an uninterrupted one. Checkpoints
are written atomically (:func:`write_checkpoint`) and removed when the job
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
import io
import json
import logging
import pickle
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import mujoco
import numpy as np
import torch
from gymnasium.utils import EzPickle

from replication.io import fsync_path, link_or_copy, read_json, remove_tree, write_json

_MJDATA_FIELDS = ("qpos", "qvel", "act", "ctrl", "mocap_pos", "mocap_quat", "qacc_warmstart")


class _DataView:
    """Marks an attribute that is a view of one of the env's ``MjData`` arrays."""

    def __init__(self, field: str):
        self.field = field


def _new(cls: type) -> Any:
    return cls.__new__(cls)


def _set_dict(obj: Any, state: dict[str, Any]) -> None:
    data = state.get("data")
    obj.__dict__.update({k: getattr(data, v.field) if isinstance(v, _DataView) else v for k, v in state.items()})


def _state_of(obj: Any) -> dict[str, Any]:
    """``obj.__dict__``, with views of its ``MjData`` arrays marked so they stay views.

    gymnasium-robotics' Franka env keeps ``init_qpos``/``init_qvel`` as views of ``data.qpos``
    and ``data.qvel``; a plain copy would change what its ``reset`` does.
    """
    state = dict(obj.__dict__)
    data = state.get("data")
    if data is None or not hasattr(data, "qpos"):
        return state
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            for field in _MJDATA_FIELDS:
                if np.shares_memory(value, getattr(data, field)):
                    state[key] = _DataView(field)
                    break
    return state


class _StatePickler(cloudpickle.CloudPickler):
    def __init__(self, file: io.BytesIO, external: list[Any]):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._external = {id(o): i for i, o in enumerate(external)}

    def persistent_id(self, obj: Any) -> Any:
        i = self._external.get(id(obj))
        return None if i is None else ("external", i)

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type):
            return super().reducer_override(obj)
        if isinstance(obj, EzPickle) or isinstance(getattr(obj, "__dict__", {}).get("data"), mujoco.MjData):
            return (_new, (type(obj),), _state_of(obj), None, None, _set_dict)
        return super().reducer_override(obj)


def dumps(obj: Any, external: list[Any] | None = None) -> bytes:
    """Pickle ``obj`` with its full state, simulators included.

    Objects in ``external`` (e.g. the episodes of a static dataset that the job rebuilds from its
    input file anyway) are stored as references to their position in that list, not by value.
    """
    buffer = io.BytesIO()
    _StatePickler(buffer, external or []).dump(obj)
    return buffer.getvalue()


class _StateUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, external: list[Any]):
        super().__init__(file)
        self._external = external

    def persistent_load(self, pid: Any) -> Any:
        return self._external[pid[1]]


def loads(data: bytes, external: list[Any] | None = None) -> Any:
    """Unpickle :func:`dumps`' bytes; ``external``: the objects ``dumps`` was given, in the same order."""
    return _StateUnpickler(io.BytesIO(data), external or []).load()


def rng_states() -> dict[str, Any]:
    """The global RNG states a training loop draws from (python, numpy, torch; CUDA where present)."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


# ---- checkpoint directories ----------------------------------------------------------------------
#
# A checkpoint is a directory ``<job>/checkpoint`` whose ``meta.json`` is written last. It is built
# as ``checkpoint.tmp`` and swapped in by renames (the previous one kept as ``checkpoint.old`` until
# the new one is in place), so a kill at any moment leaves one complete checkpoint: the new, or the
# old. ``meta.json`` carries the job's key (:func:`job_key`): a checkpoint of other settings or
# other inputs is never resumed.

META = "meta.json"


def job_key(*parts: Any) -> str:
    """A digest of everything that determines a job's results (config, arguments, input hashes)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def write_checkpoint(directory: Path | str, key: str, fill: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Atomically replace ``directory`` by a new checkpoint; ``fill(tmp)`` writes its files into ``tmp``.

    ``fill`` returns what goes into ``meta.json`` besides the key; returns that meta, with the
    checkpoint's size in bytes and the seconds it took.
    """
    start = time.perf_counter()
    directory = Path(directory)
    tmp, old = directory.with_name(directory.name + ".tmp"), directory.with_name(directory.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta = {"key": key, **fill(tmp)}
    files = [f for f in tmp.iterdir() if f.is_file()]
    meta["bytes"] = sum(f.stat().st_size for f in files)
    for f in files:
        fsync_path(f)
    meta["seconds"] = time.perf_counter() - start
    (tmp / META).write_text(json.dumps(meta, default=str))
    fsync_path(tmp / META)
    fsync_path(tmp)
    if (directory / META).exists():
        remove_tree(old)
        directory.rename(old)
    else:
        remove_tree(directory)
    tmp.rename(directory)
    fsync_path(directory.parent)
    remove_tree(old)
    return meta


def find_checkpoint(directory: Path | str, key: str) -> tuple[Path, dict[str, Any]] | None:
    """The complete checkpoint of ``directory`` (or the previous one, if a swap was cut short) made
    with ``key``, and its meta; ``None`` if there is none. A checkpoint of another key is removed."""
    directory = Path(directory)
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if (candidate / META).exists():
            meta = json.loads((candidate / META).read_text())
            if meta.get("key") == key:
                return candidate, meta
    remove_checkpoint(directory)
    return None


def remove_checkpoint(directory: Path | str) -> None:
    """Remove a job's checkpoint (and any half-written or previous one). Each goes whole: a kill
    midway never leaves a checkpoint with its ``meta.json`` but without some of its files."""
    directory = Path(directory)
    for suffix in ("", ".old", ".tmp"):
        remove_tree(directory.with_name(directory.name + suffix))


# ---- resumable jobs: keys, stages, checkpoints of the offline and fine-tuning jobs

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
        blob = {"state": state, "grad_step": int(learner.grad_step), "rng": rng_states()}
        (tmp / "state.pkl").write_bytes(pickle.dumps(blob, protocol=pickle.HIGHEST_PROTOCOL))
        return {"grad_step": int(learner.grad_step)}

    meta = write_checkpoint(directory, key, fill)
    log_saved("offline", meta["grad_step"], meta)
    return meta


def restore_offline(directory: Path, key: str, learner, out_dir: Path) -> dict[str, Any] | None:
    """Load the offline job's checkpoint into the built ``learner``, put its best files back into
    ``out_dir`` and restore the RNG states; the loop state saved with it, or ``None``."""
    found = find_checkpoint(directory, key)
    if found is None:
        return None
    path, meta = found
    blob = pickle.loads((path / "state.pkl").read_bytes())
    learner.load_model(str(path / "learner.pt"))
    learner.set_grad_step(blob["grad_step"])
    for name in OFFLINE_KEPT:
        if (path / name).exists():
            shutil.copyfile(path / name, out_dir / name)
    set_rng_states(blob["rng"])
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
    :func:`dumps`) and the RNG states, in one pickle so that objects shared
    between them stay shared. The agent's learners go to d3rlpy model files and its offline
    ``episodes`` stay out: the pickle refers to both. ``position`` (``step`` and more) goes into the meta."""
    learners = agent_learners(agent)

    def fill(tmp: Path) -> dict[str, Any]:
        for i, learner in enumerate(learners):
            learner.save_model(str(tmp / f"learner_{i}.pt"))
        blob = {"objects": objects, "rng": rng_states(), "grad_steps": [int(x.grad_step) for x in learners]}
        (tmp / "state.pkl").write_bytes(dumps(blob, [*episodes, *learners]))
        return dict(position)

    meta = write_checkpoint(directory, key, fill)
    log_saved(what, position["step"], meta)
    return meta


def restore_agent(directory: Path, key: str, agent: Any, episodes: list) -> dict[str, Any] | None:
    """The objects of :func:`save_agent` (RNG states restored), or ``None`` without a checkpoint.

    ``agent``: a freshly built agent of the same job, whose learners receive the saved states;
    ``episodes``: its offline episodes (:func:`buffer_episodes`).
    """
    found = find_checkpoint(directory, key)
    if found is None:
        return None
    path, meta = found
    learners = agent_learners(agent)
    for i, learner in enumerate(learners):
        learner.load_model(str(path / f"learner_{i}.pt"))
    blob = loads((path / "state.pkl").read_bytes(), [*episodes, *learners])
    for learner, grad_step in zip(learners, blob["grad_steps"], strict=True):
        learner.set_grad_step(grad_step)
    set_rng_states(blob["rng"])
    log.info("resumed from the checkpoint at step %d", meta["step"])
    return blob["objects"]
