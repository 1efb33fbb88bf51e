"""Task-boundary checkpoints: the merged weights, every finished task's mask, the results so far.

No optimizer state is saved: each task starts a fresh optimizer (as the reference), so a run
resumes exactly at a task boundary. No RNG state is saved either: every random draw of task
t comes from a generator seeded by (seed, t), so the seed in the config *is* the RNG state.
Checkpoints hold only tensors and plain containers and are read with `weights_only=True`,
so a crafted file cannot run code on load.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path

import torch

from cldst.config import PER_TASK_FIELDS
from cldst.masking import unpack_bits

FORMAT = "cldst-checkpoint"
# 2: task masks stored as packed bits, and the engine of the reference-parity fixes (free weights start
# at 0, Adam state kept at regrowth, dense layers kept dense). A version-1 checkpoint was made by an
# engine that computed differently, so resuming it would splice two engines into one run: refused.
VERSION = 2
# Settings that do not change what a run computes; any other difference makes a checkpoint foreign.
RUNTIME_ONLY = ("device", "precision")
# Settings a resumed run may change for the tasks still to come (the tasks learned keep theirs, recorded in
# their results): the per-task DST settings, so an adaptive search can explore at task boundaries.
MAY_CHANGE = RUNTIME_ONLY + PER_TASK_FIELDS


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed with the given configuration."""


def make_state(config: dict, next_task: int, model: torch.nn.Module, task_masks: list[dict[str, torch.Tensor]],
               results: list[dict]) -> dict:
    return {
        "format": FORMAT, "version": VERSION, "config": config, "next_task": next_task,
        # copy=True: on CPU .cpu() would alias the live weights, and training would rewrite the checkpoint.
        # Finished tasks' masks are never written again, so on CPU they are shared, not copied every task.
        "model": {name: t.detach().to("cpu", copy=True) for name, t in model.state_dict().items()},
        "task_masks": [{name: m.cpu() for name, m in masks.items()} for masks in task_masks],  # packed bits
        "results": results,
    }


def task_masks(state: dict) -> list[dict[str, torch.Tensor]]:
    """The finished tasks' masks of a checkpoint state as bool tensors (they are stored as packed bits)."""
    shapes = {name: tuple(t.shape) for name, t in state["model"].items()}
    return [{name: unpack_bits(bits, shapes[name]) for name, bits in masks.items()} for masks in state["task_masks"]]


def save(state: dict, path: str | os.PathLike) -> Path:
    """Atomic: a temp file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | os.PathLike, config: dict) -> dict:
    """Read a checkpoint and check it belongs to `config` (a resolved RunConfig dict)."""
    return check_state(read(path), config, str(path))


def read(path: str | os.PathLike) -> object:
    """A checkpoint file's contents, read without running anything (tensors and plain containers only); not yet
    checked to be a cldst checkpoint (check_state)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except pickle.UnpicklingError as err:  # weights_only refused something that is not a tensor or container
        refused = re.search(r"GLOBAL:? ([\w.]+)", str(err))  # torch's wording varies across versions
        what = refused.group(1) if refused else "an object that is not a tensor or plain container"
        raise CheckpointError(f"{path}: not a readable cldst checkpoint (it asks for {what}, which a cldst "
                              f"checkpoint never holds; refused without running it)") from None
    except Exception as err:  # truncated and corrupt files come as many exception types
        raise CheckpointError(f"{path}: not a readable cldst checkpoint ({type(err).__name__}: {err})") from None
    return state


def check_state(state: object, config: dict, path: str = "checkpoint") -> dict:
    """Check a checkpoint state (read from `path`) belongs to `config`: the same format version and
    configuration, except the settings in MAY_CHANGE."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a cldst checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state.get('version')}, this cldst reads version {VERSION} "
                              f"only (an earlier engine computed differently); rerun the experiment from its start")
    saved = state["config"]
    for name in sorted(set(saved) | set(config)):
        if name not in MAY_CHANGE and saved.get(name) != config.get(name):
            raise CheckpointError(f"{path}: made with {name}={saved.get(name)!r}, this run has "
                                  f"{name}={config.get(name)!r}; refusing to resume a different configuration")
    return state
