"""Relay's view of a dm_control task: one float32 observation vector, actions in [-1, 1].

Everything is done in one `dm_env.Environment` rather than a stack of wrappers,
because actors step it millions of times and each wrapper layer costs a Python
call per step; the transformations themselves are the small classes below.
"""

from typing import Dict, Mapping, Tuple, Union

import dm_env
import numpy as np
from acme import specs
from dm_control.rl import control
from dm_env import specs as dm_specs

from environments import rendering
from environments.config import EnvironmentConfig, PixelConfig

Observation = Union[np.ndarray, Dict[str, np.ndarray]]

_FIRST = dm_env.StepType.FIRST
_LAST = dm_env.StepType.LAST
_REWARD_SPEC = dm_specs.Array(shape=(), dtype=np.float32, name="reward")
_NO_SHADOWS = {"shadow": False}
_DISCOUNT_SPEC = dm_specs.BoundedArray(shape=(), dtype=np.float32, minimum=0.0, maximum=1.0, name="discount")


class ObservationFlattener:
    """Concatenates a dict of observations into one float32 vector.

    Entries are taken in sorted key order, each flattened in C order. The order
    depends only on the names, never on dict insertion order, so data recorded by
    one run lines up with another run's network (Replay Across Experiments).
    """

    def __init__(self, spec: Mapping[str, dm_specs.Array]):
        self.keys: Tuple[str, ...] = tuple(sorted(spec))
        self.layout: Dict[str, slice] = {}
        # (key, index or slice, multi_dim): writing each entry into a preallocated vector is ~3x
        # cheaper than np.concatenate, which matters at ~100 us per raw step.
        self._plan = []
        offset = 0
        for key in self.keys:
            shape = spec[key].shape
            size = int(np.prod(shape, dtype=np.int64))
            self.layout[key] = slice(offset, offset + size)
            # A scalar entry is written by integer index, the cheapest numpy store.
            where = offset if shape == () else self.layout[key]
            self._plan.append((key, where, len(shape) > 1))
            offset += size
        self._size = offset
        self.spec = dm_specs.Array(shape=(offset,), dtype=np.float32, name="observation")

    def __call__(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        flat = np.empty(self._size, dtype=np.float32)
        for key, where, multi_dim in self._plan:
            value = observation[key]
            flat[where] = value.reshape(-1) if multi_dim else value
        return flat


class ActionRescaler:
    """Maps actions in [-1, 1] (clipped there first) linearly onto the task's bounds.

    Written as low * (1 - t) + high * t with t = (a + 1) / 2, so that -1 and 1
    land exactly on the bounds in floating point (low + (a + 1) * half_range
    does not).
    """

    def __init__(self, spec: dm_specs.BoundedArray):
        self._low = np.broadcast_to(spec.minimum, spec.shape).astype(spec.dtype)
        self._high = np.broadcast_to(spec.maximum, spec.shape).astype(spec.dtype)
        self._is_unit_box = bool(np.all(self._low == -1.0) and np.all(self._high == 1.0))
        # Clipping writes into this buffer in the task's dtype (float64): MuJoCo copies the
        # control out of it at once, and handing it float32 costs ~2 us a step in casting.
        # The bounds are arrays because numpy converts a Python float bound on every call.
        self._clipped = np.empty(spec.shape, dtype=spec.dtype)
        self._minus_one = np.full(spec.shape, -1.0, dtype=spec.dtype)
        self._plus_one = np.full(spec.shape, 1.0, dtype=spec.dtype)
        self.spec = dm_specs.BoundedArray(
            shape=spec.shape, dtype=np.float32, minimum=-1.0, maximum=1.0, name="action"
        )

    def __call__(self, action: np.ndarray) -> np.ndarray:
        """The task action for `action`; valid until the next call (the buffer is reused)."""
        # Clipped even for a [-1, 1] task: MuJoCo would clamp the control itself, but
        # some rewards read the unclamped physics.control() (humanoid's control cost).
        clipped = np.maximum(action, self._minus_one, self._clipped)
        np.minimum(clipped, self._plus_one, clipped)
        if self._is_unit_box:
            return clipped
        t = (clipped + 1.0) * 0.5
        return self._low * (1.0 - t) + self._high * t


class RelayEnvironment(dm_env.Environment):
    """A dm_control task with flat float32 observations, [-1, 1] actions, float32 rewards.

    - observation: float32 [D] (see `observation_layout`), or the newest S frames
      uint8 [S, H, W, 3] (`PixelConfig`), or {'pixels', 'state'} when `PixelConfig.include_state`;
    - action: float32 [A] in [-1, 1], clipped, then rescaled to the task's bounds;
    - reward, discount: float32 scalars (None on the first step of an episode);
    - an episode cut by `max_episode_steps` ends with discount 1 (a truncation,
      not a terminal state), as the suite's own time limit does.
    """

    def __init__(self, task_environment: control.Environment, config: EnvironmentConfig):
        self._env = task_environment
        self._config = config
        self._flatten = ObservationFlattener(task_environment.observation_spec())
        self._rescale = ActionRescaler(task_environment.action_spec())
        self._pixels: PixelConfig = config.pixels
        self._action_repeat = config.action_repeat
        self._max_episode_steps = config.max_episode_steps
        self._episode_steps = 0
        self._reset_next_step = True
        # Bound once: the step below is the actors' hot path, and each attribute lookup or
        # extra Python frame there is a visible share of a ~100 us physics step.
        self._task_step = task_environment.step
        self._rescale_action = self._rescale.__call__
        self._observe = self._flatten.__call__ if config.pixels is None else self._observe_pixels
        # The newest S frames, oldest first; rolled by one slot each step.
        self._frames = None if config.pixels is None else np.zeros(
            (config.pixels.frame_stack, config.pixels.height, config.pixels.width, 3), np.uint8)

    @property
    def config(self) -> EnvironmentConfig:
        return self._config

    @property
    def observation_layout(self) -> Dict[str, slice]:
        """Where each named dm_control observation lies in the flat state vector."""
        return dict(self._flatten.layout)

    @property
    def physics(self):
        return self._env.physics

    @property
    def control_timestep(self) -> float:
        """Simulated seconds per agent step (action repeat included)."""
        return self._env.control_timestep() * self._action_repeat

    def reset(self) -> dm_env.TimeStep:
        self._episode_steps = 0
        self._reset_next_step = False
        timestep = self._env.reset()
        if self._frames is not None:
            self._frames[:] = self._render_observation()
        return dm_env.TimeStep(_FIRST, None, None, self._observe(timestep.observation))

    def step(self, action: np.ndarray) -> dm_env.TimeStep:
        if self._reset_next_step:
            return self.reset()
        task_action = self._rescale_action(action)
        timestep = self._task_step(task_action)
        reward = timestep.reward
        discount = timestep.discount
        if self._action_repeat > 1:
            for _ in range(self._action_repeat - 1):
                if timestep.step_type is _LAST:
                    break
                timestep = self._task_step(task_action)
                reward += discount * timestep.reward
                discount *= timestep.discount
        self._episode_steps += 1
        step_type = timestep.step_type
        if self._episode_steps == self._max_episode_steps:
            step_type = _LAST
        self._reset_next_step = step_type is _LAST
        return dm_env.TimeStep(step_type, np.float32(reward), np.float32(discount), self._observe(timestep.observation))

    def _observe_pixels(self, observation: Mapping[str, np.ndarray]) -> Observation:
        """The frame stack after this step; a new array each step (callers keep observations)."""
        frames = self._frames
        if self._episode_steps > 0:  # reset() filled every slot with the first frame
            frames[:-1] = frames[1:]
            frames[-1] = self._render_observation()
        stack = frames.copy()
        if self._pixels.include_state:
            return {"pixels": stack, "state": self._flatten(observation)}
        return stack

    def _render_observation(self) -> np.ndarray:
        pixels = self._pixels
        return self.render(pixels.height, pixels.width, pixels.camera_id, shadows=pixels.shadows)

    def render(self, height: int, width: int, camera_id: int = 0, shadows: bool = True) -> np.ndarray:
        """An RGB frame, uint8 [height, width, 3], of the current physics state."""
        try:
            return self._env.physics.render(height, width, camera_id=camera_id,
                                            render_flag_overrides=None if shadows else _NO_SHADOWS)
        except Exception as error:  # dm_control raises several types when no GL context can be made
            raise rendering.rendering_error(error) from error

    def observation_spec(self):
        if self._pixels is None:
            return self._flatten.spec
        pixels = dm_specs.Array(
            shape=(self._pixels.frame_stack, self._pixels.height, self._pixels.width, 3), dtype=np.uint8, name="pixels"
        )
        if self._pixels.include_state:
            return {"pixels": pixels, "state": self._flatten.spec}
        return pixels

    def action_spec(self) -> dm_specs.BoundedArray:
        return self._rescale.spec

    def reward_spec(self) -> dm_specs.Array:
        return _REWARD_SPEC

    def discount_spec(self) -> dm_specs.BoundedArray:
        return _DISCOUNT_SPEC

    @property
    def environment_spec(self) -> specs.EnvironmentSpec:
        return specs.make_environment_spec(self)

    def close(self):
        """Frees the physics and its rendering contexts here, in the thread that made them: left to
        dm_control's exit handler, a context made in another thread (a local_mt node's) fails to
        free with EGL_BAD_ACCESS tracebacks as the process exits."""
        self._env.close()
        self._env.physics.free()
