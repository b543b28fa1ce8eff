"""The actors' side of replay for pixel runs: n-step transitions whose frames are stored once.

A pixel run's observation is a stack of the newest S frames, uint8 [S, H, W, 3]. Packed into
every item as state items are (`replay.writer`), each frame would be stored up to 2S times.
Here each frame goes into Reverb once, as one cell of its environment's frame column, and an
item references cells. For step t of an episode, with k = min(n, steps left) as in `NStepWriter`:

    observation             frames t-S+1 .. t        uint8 [S, H, W, 3]  cells of the frame column
    next_observation        frames t+k-S+1 .. t+k    uint8 [S, H, W, 3]  cells of the frame column
    action_reward_discount  [a_t, Σ_{i<k} γ^i r_{t+i}, γ^k Π_{i<k} d_{t+i}]
                                                     float32 [A + 2]     a cell of its own

Frames before an episode's first are its first frame, as in the environment's own stack.

What this rests on (Reverb 0.7, reverb/cc/trajectory_writer.cc, `MergeAdjacent`): an item
column's refs go to the server as chunk slices, and consecutive refs into one chunk are merged
into one slice that starts at the first ref's offset, as if the cells were consecutive. So a
column must reference consecutive cells of a chunk, in order; anything else reads other cells
or fails (tests/test_replay_frames.py shows both). Hence:
  - an episode's first stack is S cells: its first frame appended S times (S - 1 padding
    frames stored per episode);
  - each environment has a frame column of its own, so its frames are consecutive cells
    however the actor interleaves its environments.
"""

import dataclasses
from typing import Dict, List, Mapping, Tuple

import numpy as np
import reverb
import tensorflow as tf

from replay import reverb_internals
from replay.writer import NStepWriter

OBSERVATION, NEXT_OBSERVATION, ACTION_REWARD_DISCOUNT = "observation", "next_observation", "action_reward_discount"
# Reverb flattens a dict signature in sorted-key order; an item lists its columns in that order.
ITEM_COLUMNS = tuple(sorted((ACTION_REWARD_DISCOUNT, NEXT_OBSERVATION, OBSERVATION)))

# Cells per chunk, in every column. Reverb compresses a chunk with Snappy, whose 64 KiB blocks
# let a frame compress against the others in its block (up to 5 frames of 64x64, 3 of 84x84),
# and rendered frames change little from step to step; but the server sends, and the sampler
# decompresses, every chunk a sampled item touches whole. Measured on cartpole:swingup frames,
# S = 3, n = 5 (experiments/results/replay_frames/replay_frames_2026-12-02.json): server memory
# per item 4.8 KB at 64x64 and 8.9 KB at 84x84 with 4 cells, 15.8 and 19.9 KB with 1; sampler
# CPU per batch of 256 lower at 64x64 (0.046 s vs 0.058) and within the blocks' noise at 84x84
# (0.103 vs 0.090 there, 0.077 vs 0.086 in another run). 8 cells save at most 18% more memory
# for more sampler CPU, 16 up to twice the CPU. An item waits for its chunks to fill (at most
# 3 more steps) or for a flush.
CHUNK_LENGTH = 4


@dataclasses.dataclass(frozen=True)
class FrameLayout:
    """A pixel run's items: stacks of uint8 frames, and the rest in one small float32 vector."""

    frame_shape: Tuple[int, int, int]  # (H, W, 3)
    frame_stack: int  # S
    action_dim: int  # A

    def __post_init__(self):
        if len(self.frame_shape) != 3 or self.frame_shape[-1] != 3 or min(self.frame_shape) < 1:
            raise ValueError(f"FrameLayout.frame_shape must be (H, W, 3), got {self.frame_shape}.")
        if self.frame_stack < 1 or self.action_dim < 1:
            raise ValueError(f"FrameLayout.frame_stack and action_dim must be >= 1, got {self.frame_stack} "
                             f"and {self.action_dim}.")

    @property
    def stack_shape(self) -> Tuple[int, int, int, int]:
        return (self.frame_stack, *self.frame_shape)

    def signature(self) -> Dict[str, tf.TensorSpec]:
        """The structure (and dtype, shape) of one table item."""
        return {
            OBSERVATION: tf.TensorSpec(self.stack_shape, tf.uint8),
            NEXT_OBSERVATION: tf.TensorSpec(self.stack_shape, tf.uint8),
            ACTION_REWARD_DISCOUNT: tf.TensorSpec((self.action_dim + 2,), tf.float32),
        }

    def unpack(self, data: Mapping[str, object]) -> Dict[str, object]:
        """A (batch of) table item(s), numpy or TensorFlow, structured as `signature`, -> the FIELDS."""
        a = self.action_dim
        rest = data[ACTION_REWARD_DISCOUNT]  # [..., A + 2]
        return {"observation": data[OBSERVATION], "action": rest[..., :a], "reward": rest[..., a],
                "discount": rest[..., a + 1], "next_observation": data[NEXT_OBSERVATION]}

    unpack_item = unpack  # the name replay.dataset calls on either layout


class FrameWriter(NStepWriter):
    """Writes an actor's n-step transitions of frames; `NStepWriter`'s API and n-step semantics.

    Each timestep's observation is ONE frame, uint8 [H, W, 3]: the newest of the environment's
    stack (observation[-1]) for an actor, the recorded frame for RaE. The writer keeps the
    refs of each environment's newest `frame_stack` frame cells as its observation and
    references them from the items, so each frame is sent once.
    """

    def __init__(self, client: reverb.Client, table: str, n_step: int, discount: float, max_in_flight_items: int = 16,
                 num_envs: int = 1, *, frame_stack: int, chunk_length: int = CHUNK_LENGTH):
        for name, value in (("frame_stack", frame_stack), ("chunk_length", chunk_length)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        self._frame_stack = frame_stack
        self._chunk_length = chunk_length
        # Columns 0 .. num_envs - 1: each environment's frames. Column num_envs: the items' small vectors.
        self._num_columns = num_envs + 1
        self._rest_column = num_envs
        super().__init__(client, table, n_step, discount, max_in_flight_items, num_envs)

    def _chunker_options(self):
        # Writing the item of step t (k = n) needs the cells of frames t-S+1 .. t+n, padding
        # included: the S + n newest of its column. Older refs expire (an item already created
        # keeps its data). +1: one frame per environment of actor memory, so that the bound is
        # not exact to the cell. Reverb also wants at least a chunk's worth.
        keep_alive = max(self._frame_stack + self._n_step + 1, self._chunk_length)
        return reverb_internals.chunker_options(max_chunk_length=self._chunk_length, num_keep_alive_refs=keep_alive)

    def _observe(self, observation, env: int, first: bool) -> List:
        """The refs of the environment's newest S frame cells, this timestep's frame appended."""
        frame = self._frame(observation)
        if first:  # the first frame and S - 1 copies: a column cannot reference one cell twice (module docstring)
            return [self._append_frame(frame, env) for _ in range(self._frame_stack)]
        return self._observation[env][1:] + [self._append_frame(frame, env)]

    def _frame(self, observation) -> np.ndarray:
        frame = np.asarray(observation)
        if frame.ndim != 3 or frame.dtype != np.uint8:
            raise ValueError(f"FrameWriter takes one frame per timestep, uint8 [H, W, 3] (the newest of the stack, "
                             f"observation[-1]); got {frame.dtype} {list(frame.shape)}.")
        return np.ascontiguousarray(frame)

    def _append_frame(self, frame: np.ndarray, env: int):
        row = [None] * self._num_columns
        row[env] = frame
        return self._writer.Append(row)[env]

    def _insert(self, env: int, observation: List, action: np.ndarray, n_step_return: float, bootstrap: float) -> None:
        row = [None] * self._num_columns
        row[self._rest_column] = np.concatenate([action, np.array([n_step_return, bootstrap], np.float32)],
                                                dtype=np.float32)
        rest = self._writer.Append(row)[self._rest_column]
        # ITEM_COLUMNS order: action_reward_discount, next_observation, observation.
        self._writer.CreateItem(self._table, 1.0, [[rest], self._observation[env], observation], [True, False, False])
