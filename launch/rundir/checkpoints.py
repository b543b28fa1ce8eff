"""Learner checkpoints that any run can use: resume, warm-start, evaluate.

    RUN_DIR/checkpoints/<learner step>/state/   the whole LearnerState (orbax PyTree, host numpy arrays)
    RUN_DIR/checkpoints/<learner step>/meta/    JSON: learner step, the counter's totals, time, digest, shapes

A checkpoint is complete or absent. Orbax writes each one into a temporary directory
and renames it when it is finished, so a kill during a save leaves no directory with
a step's name (the run's next writer removes the temporary one; a save that fails, as
on a full disk, removes its own and raises a RunError that says so). On top of that,
`meta` holds a SHA-256 of every array; a checkpoint damaged later (a truncated file)
fails that check or orbax's own reads, and loading falls back to the previous one
with a warning.

Arrays are saved as host numpy arrays, without device or sharding metadata, so a
checkpoint written on a GPU (or on 8 devices) loads on a CPU-only machine.

Only `CheckpointWriter` writes, and only under its own run directory; everything else
here reads, so another run's checkpoints are never changed.
"""

import dataclasses
import hashlib
import logging
import os
import re
import shutil
import sys
import time
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

from absl import logging as absl_logging
import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp

from launch.faults import disk_full

CHECKPOINTS_DIR = "checkpoints"
# Checkpoints found damaged when a run is resumed are moved here, never deleted.
DAMAGED_DIR = "checkpoints.damaged"
FORMAT = "relay-checkpoint/1"
PARTS = ("policy", "critic", "all")
_ITEMS = ("state", "meta")




def _quiet_orbax(record) -> bool:
    # Orbax logs a dozen INFO lines per save; a local_mt run prints them over the progress line.
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


absl_logging.get_absl_logger().addFilter(_quiet_orbax)


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped because it cannot be loaded; an older one is used."""


class CheckpointError(ValueError):
    """No usable checkpoint where one was asked for, or one that does not fit this run."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    path: str  # the step directory
    step: int
    state: dict  # LearnerState as flax's state dict: nested dicts of numpy arrays
    meta: dict


def checkpoints_dir(run_dir: str) -> str:
    return os.path.join(run_dir, CHECKPOINTS_DIR)


def list_steps(run_dir: str) -> List[int]:
    """Learner steps of the finished checkpoints of a run, oldest first (orbax's temporary
    directories of a save in progress or killed have other names and are not listed)."""
    directory = checkpoints_dir(run_dir)
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory)
                  if re.fullmatch(r"\d+", name) and os.path.isdir(os.path.join(directory, name)))


def _leaves_with_paths(tree) -> List[Tuple[str, np.ndarray]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return sorted(("/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path), np.asarray(leaf))
                  for path, leaf in flat)


def digest(tree) -> str:
    """SHA-256 over every array's path, dtype, shape and bytes."""
    sha = hashlib.sha256()
    for path, leaf in _leaves_with_paths(tree):
        sha.update(f"{path}|{leaf.dtype.str}|{leaf.shape}|".encode())
        sha.update(np.ascontiguousarray(leaf).tobytes())
    return sha.hexdigest()


def state_dict(state) -> dict:
    """A LearnerState (on any devices) as flax's state dict of host numpy arrays."""
    return flax.serialization.to_state_dict(jax.tree_util.tree_map(np.asarray, jax.device_get(state)))


class CheckpointWriter:
    """Saves a run's learner state into RUN_DIR/checkpoints, keeping the newest `keep`."""

    def __init__(self, run_dir: str, keep: int = 3, static_meta: Optional[dict] = None):
        self._run_dir = run_dir
        # Cleaning up removes only orbax's temporary directories (saves killed or failed in an
        # earlier process of this run), never a finished checkpoint.
        self._manager = ocp.CheckpointManager(
            os.path.abspath(checkpoints_dir(run_dir)), item_names=_ITEMS,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True),
        )
        self._static_meta = dict(static_meta or {})
        self.last_step: Optional[int] = max(list_steps(run_dir), default=None)
        self._failed_step: Optional[int] = None  # a save that failed and was reported

    def save(self, state, counts: Dict[str, float], reason: str) -> Optional[str]:
        """Saves `state` at its own step (None if that step is already saved); returns its directory."""
        tree = state_dict(state)
        step = int(tree["steps"])
        if step == self.last_step:
            return None
        now = time.time()
        meta = {
            **self._static_meta, "format": FORMAT, "learner_step": step, "reason": reason,
            "counts": {key: float(value) for key, value in counts.items()},
            "saved_at": now, "saved_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "digest": digest(tree),
        }
        try:
            self._manager.save(step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(tree), meta=ocp.args.JsonSave(meta)))
            self._manager.wait_until_finished()
        except Exception as error:  # orbax raises OSError, or tensorstore's ValueError naming the OS error
            directory = str(self._manager.directory)
            # Worded before the partial save is removed: the free space it reports is the full disk's.
            full = disk_full.run_error(
                error, f"Saving the learner checkpoint at step {step} into {directory} failed", directory,
                f"Its partial directory was removed; the checkpoints already there "
                f"({list_steps(self._run_dir) or 'none'}) are whole and load.", self._run_dir)
            self._failed_step = step
            self._discard_unfinished(step)
            if full is None:
                raise
            raise full from error
        self.last_step = step
        return os.path.join(str(self._manager.directory), str(step))

    def _discard_unfinished(self, step: int) -> None:
        """Removes what a failed save left: its temporary directory (it is never listed as a
        checkpoint, but it holds the space a full disk needs back), and orbax's in-memory
        list, which has already dropped the old steps this save was to replace."""
        try:
            self._manager.wait_until_finished()
        except Exception:  # the same failure, seen again
            pass
        self._remove_temporary(step)
        self._manager.reload()

    def _remove_temporary(self, step: int) -> None:
        directory = str(self._manager.directory)
        prefix = f"{step}{ocp.utils.TMP_DIR_SUFFIX}"
        for name in os.listdir(directory):
            if name.startswith(prefix):
                shutil.rmtree(os.path.join(directory, name), ignore_errors=True)

    def close(self) -> None:
        try:
            self._manager.wait_until_finished()
            self._manager.close()
        except Exception:
            if self._failed_step is None:
                raise
            # orbax raises a failed save's error at every wait, and its last write (the metadata)
            # may have ended after the save was reported: what it left goes too.
            self._remove_temporary(self._failed_step)


def load(path: str) -> Checkpoint:
    """The checkpoint in a step directory, checked against its digest; CheckpointError if it cannot be used."""
    path = os.path.abspath(path)
    if not os.path.isdir(os.path.join(path, "state")) or not os.path.isdir(os.path.join(path, "meta")):
        raise CheckpointError(f"{path} is not a Relay checkpoint (no state/ and meta/ inside).")
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler(*_ITEMS))
    try:
        restored = checkpointer.restore(path, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(), meta=ocp.args.JsonRestore()))
    except Exception as error:  # orbax/tensorstore raise many types for a damaged file
        raise CheckpointError(f"{path} cannot be read: {type(error).__name__}: {str(error)[:300]}") from None
    finally:
        checkpointer.close()
    state, meta = restored["state"], restored["meta"] or {}
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has format {meta.get('format')!r}; this Relay reads {FORMAT!r}.")
    if digest(state) != meta.get("digest"):
        raise CheckpointError(f"{path} is damaged: its arrays do not match the digest written with them.")
    return Checkpoint(path=path, step=int(meta["learner_step"]), state=state, meta=meta)


def load_latest(run_dir: str, step: Optional[int] = None) -> Tuple[Checkpoint, List[str]]:
    """The newest loadable checkpoint of a run (at most `step`, or exactly `step` if given).

    Damaged checkpoints are skipped with a CheckpointWarning and returned in the list
    (their directories); CheckpointError if none is left.
    """
    steps = list_steps(run_dir)
    if step is not None:
        if step not in steps:
            raise CheckpointError(f"{run_dir} has no checkpoint at learner step {step}; it has {steps or 'none'}.")
        steps = [step]
    if not steps:
        raise CheckpointError(f"{run_dir} has no checkpoints (looked in {checkpoints_dir(run_dir)}).")
    damaged = []
    for candidate in reversed(steps):
        try:
            return load(os.path.join(checkpoints_dir(run_dir), str(candidate))), damaged
        except CheckpointError as error:
            damaged.append(os.path.join(checkpoints_dir(run_dir), str(candidate)))
            warnings.warn(f"Skipping checkpoint {candidate}: {error}", CheckpointWarning, stacklevel=2)
    raise CheckpointError(f"None of the checkpoints of {run_dir} ({steps}) can be loaded; see the warnings above.")


def reporting_skips(load, *args):
    """Calls load(*args), printing to stderr each damaged checkpoint it skipped (command-line tools)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CheckpointWarning)
        result = load(*args)
    for warning in caught:
        if issubclass(warning.category, CheckpointWarning):
            print(f"warning: {warning.message}", file=sys.stderr)
    return result


def resolve(spec: str) -> Checkpoint:
    """A run directory (its newest loadable checkpoint), its checkpoints/ directory, or one step directory."""
    path = os.path.abspath(spec)
    if os.path.basename(path) == CHECKPOINTS_DIR:
        path = os.path.dirname(path)
    if os.path.isdir(os.path.join(path, "state")):
        return load(path)
    if os.path.isdir(path):
        return load_latest(path)[0]
    raise CheckpointError(f"{spec} does not exist: pass a run directory or a checkpoint directory "
                          f"(RUN_DIR/{CHECKPOINTS_DIR}/<step>).")


def set_aside(paths: Sequence[str], run_dir: str) -> List[str]:
    """Moves damaged checkpoints of this run out of its checkpoints/ (kept, never deleted),
    so that keeping the newest K does not count them. Returns the new paths."""
    moved = []
    for path in paths:
        target = os.path.join(run_dir, DAMAGED_DIR, f"{os.path.basename(path)}-{time.strftime('%Y%m%dT%H%M%S')}")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(path, target)
        moved.append(target)
    return moved


def _flat(tree) -> Dict[str, tuple]:
    return {path: leaf.shape for path, leaf in _leaves_with_paths(tree)}


def mismatches(expected, found, what: str) -> List[str]:
    """Each layer whose shape differs, or that only one side has, named by its path."""
    expected, found = _flat(expected), _flat(found)
    problems = [f"{what}/{path}: checkpoint {found[path]} vs this run {shape}"
                for path, shape in expected.items() if path in found and found[path] != shape]
    problems += [f"{what}/{path}: missing from the checkpoint (this run {shape})"
                 for path, shape in expected.items() if path not in found]
    problems += [f"{what}/{path}: only in the checkpoint {shape}" for path, shape in found.items() if path not in expected]
    return problems


def _check(expected, found, what: str, checkpoint: Checkpoint) -> None:
    problems = mismatches(expected, found, what)
    if problems:
        raise CheckpointError(f"Checkpoint {checkpoint.path} does not fit this run's networks:\n  "
                              + "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""))


def restore_state(template, checkpoint: Checkpoint):
    """The whole LearnerState of `checkpoint`, in `template`'s structure (host arrays)."""
    host = state_dict(template)
    _check(host, checkpoint.state, "state", checkpoint)
    return flax.serialization.from_state_dict(jax.device_get(template), checkpoint.state)


def _network_keys(parts: str) -> Tuple[str, ...]:
    if parts not in PARTS:
        raise CheckpointError(f"Unknown part {parts!r} to initialise from; choose one of {', '.join(PARTS)}.")
    return {"policy": ("policy_params",), "critic": ("critic_params",), "all": ("policy_params", "critic_params")}[parts]


def check_networks(template, checkpoint: Checkpoint, parts: str) -> None:
    """CheckpointError naming every layer of `parts` whose shape differs from this run's."""
    host = state_dict(template)
    for key in _network_keys(parts):
        _check(host[key], checkpoint.state[key], key, checkpoint)


def init_from(template, checkpoint: Checkpoint, parts: str):
    """`template` (a fresh LearnerState) with the networks of `parts` taken from `checkpoint`.

    The target networks start equal to the loaded ones; optimizer states, duals, step
    counter and RNG stay fresh.
    """
    check_networks(template, checkpoint, parts)
    host = state_dict(template)
    for key in _network_keys(parts):
        host[key] = checkpoint.state[key]
        host["target_" + key] = checkpoint.state[key]
    return flax.serialization.from_state_dict(jax.device_get(template), host)


def parse_init_spec(spec: str) -> Tuple[str, str]:
    """'PATH[:policy|critic|all]' -> (PATH, part); the part defaults to all."""
    path, colon, part = spec.rpartition(":")
    if colon and part in PARTS:
        return path, part
    return spec, "all"
