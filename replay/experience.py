"""Every run's raw experience on disk, written as the actors go; read back by later runs (RaE).

Format "relay-experience", version 2. Independent of Reverb: plain NumPy files.

    RUN_DIR/experience/
        spec.json                      format, version, task, shapes and dtypes, action bounds
        actor_<i>/<chunk:08d>.npz      one actor's steps, chunk after chunk, in order
                                       (actor_<i>_env_<k>/ when an actor steps several environments)

A chunk holds the timesteps of one actor environment as dm_env produced them, K rows,
each array with K as its first axis:

    step_type    uint8 [K]       dm_env.StepType: 0 FIRST, 1 MID, 2 LAST
    reward       float32 [K]     the reward that came with this timestep (0 at FIRST)
    discount     float32 [K]     the discount that came with this timestep (1 at FIRST)
    observation  float32 [K, O]  state runs: the flat observation (environments' sorted-key layout)
                 uint8 [K, H, W, 3]  pixel runs: the newest frame of the timestep's stack, one
                                 frame per timestep (a reader restacks with its own S)
    action       float32 [K, A]  the action the policy took at this timestep, in [-1, 1]
                                 as sampled (0 at LAST, where none is taken)

spec.json's "observation_shape" and "observation_dtype" are those of one stored timestep
([O] float32, or [H, W, 3] uint8); pixel runs add "frame_stack", the S the run itself
stacked (for information). Version 1 (state runs before pixels) had no "observation_dtype":
it reads as float32.

Chunks of frames are written with np.savez_compressed, state chunks with np.savez as in
version 1. Rendered 64x64 cartpole frames shrink from 12,314 to 354 bytes a frame under zlib,
for 0.11 ms a step (np.savez: 0.016 ms) where rendering the frame takes ~44 ms on the same CPU
(experiments/results/replay_frames/replay_frames_2026-12-02.json, "recorder"); a state actor's
steps are far cheaper and its vectors shrink little, so its chunks stay uncompressed.

Episodes run on across chunk boundaries. Each chunk is written to a temporary
name and renamed, so a chunk file is complete or absent; a run killed mid-way
loses only the steps not yet written (at most `flush_every_s` seconds' worth).
A chunk that cannot be written (a full disk) raises ChunkWriteError: the partial chunk
is removed, the chunks before it stay whole (the actor ends the run saying so,
`launch.faults.disk_full`).
A later run rebuilds n-step transitions with its own n and discount from these.
"""

import io
import json
import os
import threading
import time
from typing import Iterator, List, Optional

import dm_env
import numpy as np
from acme import specs

from replay.frame_writer import FrameLayout
from replay.layouts import layout_of

FORMAT = "relay-experience"
VERSION = 2
READABLE_VERSIONS = (1, 2)
EXPERIENCE_DIR = "experience"
SPEC_FILE = "spec.json"
COLUMNS = ("step_type", "reward", "discount", "observation", "action")


def experience_dir(run_dir: str) -> str:
    return os.path.join(run_dir, EXPERIENCE_DIR)


def write_spec(run_dir: str, task: str, spec: specs.EnvironmentSpec) -> None:
    """Writes experience/spec.json (once per run, before any actor writes). `spec` is the
    environment's, with the stacked observation of a pixel run; one frame of it is stored."""
    path = os.path.join(experience_dir(run_dir), SPEC_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = {
        "format": FORMAT,
        "version": VERSION,
        "task": task,
        **stored_observation(spec),
        "action_shape": list(spec.actions.shape),
        "action_minimum": np.broadcast_to(spec.actions.minimum, spec.actions.shape).tolist(),
        "action_maximum": np.broadcast_to(spec.actions.maximum, spec.actions.shape).tolist(),
        "columns": list(COLUMNS),
    }
    # Every actor writes the same spec, possibly at once (threads in local_mt): each through its own temporary file.
    temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(temporary, "w") as file:
        json.dump(data, file, indent=2)
    os.replace(temporary, path)


def stored_observation(spec: specs.EnvironmentSpec) -> dict:
    """spec.json's description of one stored timestep's observation for a run with `spec`."""
    layout = layout_of(spec)
    if isinstance(layout, FrameLayout):
        return {"observation_shape": list(layout.frame_shape), "observation_dtype": "uint8",
                "frame_stack": layout.frame_stack}
    return {"observation_shape": [layout.observation_dim], "observation_dtype": "float32"}


def read_spec(run_dir: str) -> dict:
    """experience/spec.json, a version 1 one with its implied "observation_dtype" (float32) filled in."""
    path = os.path.join(experience_dir(run_dir), SPEC_FILE)
    try:
        with open(path) as file:
            data = json.load(file)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: {run_dir} has no recorded experience.") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from None
    if data.get("format") != FORMAT or data.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"{path} is format {data.get('format')!r} version {data.get('version')!r}; "
                         f"this Relay reads {FORMAT!r} versions {', '.join(map(str, READABLE_VERSIONS))}.")
    if data["version"] == 1:
        data["observation_dtype"] = "float32"
    return data


def stream_name(actor_id: int, env_index: Optional[int] = None) -> str:
    """The directory of one actor environment's steps: actor_<i>, or actor_<i>_env_<k> when an
    actor steps several environments (each is a stream of whole episodes of its own)."""
    return f"actor_{actor_id}" if env_index is None else f"actor_{actor_id}_env_{env_index}"


class ChunkWriteError(OSError):
    """A chunk could not be written (a full disk, a quota, an I/O error): its partial file is
    removed, the chunks before it are whole. `failed` and `kept` say so in words, `directory`
    is where (launch.faults.disk_full turns a full disk into the run's error with them)."""

    def __init__(self, cause: OSError, failed: str, directory: str, kept: str):
        super().__init__(cause.errno, f"{failed}: {cause.strerror or cause}. {kept}")
        self.failed, self.directory, self.kept = failed, directory, kept


class ExperienceRecorder:
    """Records one actor environment's timesteps and actions into experience/<stream_name>/;
    `add_first` / `add` as a writer. Observations are kept in their own dtype; a pixel run hands
    it the timesteps it hands its FrameWriter, whose observation is the newest frame alone."""

    def __init__(self, run_dir: str, actor_id: int, chunk_steps: int = 1000, flush_every_s: float = 2.0,
                 env_index: Optional[int] = None, flush_on_add: bool = True):
        """flush_on_add: `add` writes a chunk once `due()`; False leaves that to the caller
        (the actor, which counts its steps before it records them)."""
        self._run_dir = run_dir
        self._directory = os.path.join(experience_dir(run_dir), stream_name(actor_id, env_index))
        os.makedirs(self._directory, exist_ok=True)
        # A restarted actor continues after the chunks already there; it never rewrites one.
        self._next_chunk = len(_chunk_paths(self._directory))
        self._chunk_steps = chunk_steps
        self._flush_every_s = flush_every_s
        self._rows: List[tuple] = []
        self._pending: Optional[dm_env.TimeStep] = None  # the timestep whose action is not known yet
        self._action_shape = None
        self._last_flush = time.monotonic()
        self._flush_on_add = flush_on_add

    def due(self) -> bool:
        """Whether a chunk is due: `chunk_steps` rows held, or `flush_every_s` since the last one."""
        return len(self._rows) >= self._chunk_steps or time.monotonic() - self._last_flush >= self._flush_every_s

    def add_first(self, timestep: dm_env.TimeStep) -> None:
        self._pending = timestep

    def add(self, action: np.ndarray, next_timestep: dm_env.TimeStep) -> None:
        action = np.asarray(action, np.float32)
        self._action_shape = action.shape
        self._rows.append((self._pending, action))
        if next_timestep.last():
            self._rows.append((next_timestep, None))
            self._pending = None
        else:
            self._pending = next_timestep
        if self._flush_on_add and self.due():
            self.flush()

    def end_unfinished_episode(self, action: np.ndarray) -> None:
        """Ends the episode where its next timestep is not to be kept (the environment's step
        gave a NaN or crashed): the timestep waiting for its action is written with `action`,
        and the episode has no LAST step, like one the recording stopped in. Readers rebuild
        transitions up to that timestep, the same ones the actor's `NStepWriter.end_unfinished_episode`
        inserted."""
        action = np.asarray(action, np.float32)
        self._action_shape = action.shape
        self._rows.append((self._pending, action))
        self._pending = None

    def flush(self) -> None:
        """Writes the rows so far as one chunk (nothing if there are none)."""
        self._last_flush = time.monotonic()
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        zeros = np.zeros(self._action_shape, np.float32)
        chunk = {
            "step_type": np.array([int(timestep.step_type) for timestep, _ in rows], np.uint8),
            "reward": np.array([0.0 if timestep.first() else timestep.reward for timestep, _ in rows], np.float32),
            "discount": np.array([1.0 if timestep.first() else timestep.discount for timestep, _ in rows], np.float32),
            "observation": np.stack([np.asarray(timestep.observation) for timestep, _ in rows]),
            "action": np.stack([zeros if action is None else action for _, action in rows]),
        }
        path = os.path.join(self._directory, f"{self._next_chunk:08d}.npz")
        # Zipped in memory first: numpy's zip writer cut off by a full disk leaves a ZipFile
        # that prints an error when it is collected. A chunk is a few MB at most.
        data = io.BytesIO()
        save = np.savez_compressed if chunk["observation"].dtype == np.uint8 else np.savez  # module docstring
        save(data, **chunk)
        try:
            with open(path + ".tmp", "wb") as file:
                file.write(data.getbuffer())
        except OSError as error:
            # A partial .tmp is never read, and on a full disk it holds space the run needs.
            try:
                os.remove(path + ".tmp")
            except FileNotFoundError:
                pass
            raise ChunkWriteError(
                error, f"Writing the experience chunk {path} failed", self._directory,
                f"The {self._next_chunk} chunks before it in {self._directory} are whole and load; "
                f"its partial file was removed and its {len(rows)} steps are lost.") from error
        os.replace(path + ".tmp", path)
        self._next_chunk += 1

    def close(self) -> None:
        """Writes what is buffered. The timestep still waiting for its action is dropped."""
        self.flush()


def _chunk_paths(directory: str) -> List[str]:
    return sorted(os.path.join(directory, name) for name in os.listdir(directory) if name.endswith(".npz"))


def actor_directories(run_dir: str) -> List[str]:
    root = experience_dir(run_dir)
    return sorted(os.path.join(root, name) for name in os.listdir(root) if name.startswith("actor_"))


class CorruptChunkError(ValueError):
    """A chunk file that cannot be read whole; `path` names it."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path} is not a readable experience chunk ({reason}).")
        self.path = path


def read_chunk(path: str) -> dict:
    """One chunk's arrays; a file that is not a complete chunk raises CorruptChunkError naming it."""
    try:
        with np.load(path) as data:
            chunk = {column: data[column] for column in COLUMNS}
    except Exception as error:  # zipfile, pickle and key errors alike: the file is not a whole chunk
        raise CorruptChunkError(path, f"{type(error).__name__}: {error}") from None
    lengths = {len(array) for array in chunk.values()}
    if len(lengths) != 1:
        raise CorruptChunkError(path, f"columns of different lengths {sorted(lengths)}")
    return chunk


def read_episodes(actor_directory: str, skipped: Optional[List[str]] = None) -> Iterator[dict]:
    """One actor's episodes in order, each a dict of the COLUMNS from FIRST to LAST.

    An episode still running when the recording stopped, or cut before a bad step
    (`ExperienceRecorder.end_unfinished_episode`), is yielded too (it has no LAST step):
    its steps are real experience. A chunk that cannot be read raises
    CorruptChunkError, unless `skipped` is a list: then its path is appended, the
    episode it cuts is dropped, and reading goes on from the next episode start.
    """
    episode: List[dict] = []
    broken = False  # inside an episode that lost a chunk: drop pieces until the next FIRST
    for path in _chunk_paths(actor_directory):
        try:
            chunk = read_chunk(path)
        except CorruptChunkError:
            if skipped is None:
                raise
            skipped.append(path)
            episode, broken = [], True
            continue
        starts = np.flatnonzero(chunk["step_type"] == dm_env.StepType.FIRST)
        bounds = sorted({0, len(chunk["step_type"]), *starts.tolist()})
        for begin, end in zip(bounds[:-1], bounds[1:]):
            piece = {column: array[begin:end] for column, array in chunk.items()}
            if piece["step_type"][0] == dm_env.StepType.FIRST:
                if episode:
                    yield _concatenate(episode)
                episode, broken = [], False
            if not broken:
                episode.append(piece)
    if episode:
        yield _concatenate(episode)


def _concatenate(pieces: List[dict]) -> dict:
    return {column: np.concatenate([piece[column] for piece in pieces]) for column in COLUMNS}
