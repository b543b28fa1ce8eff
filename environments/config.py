"""Configuration of one environment instance, as frozen dataclasses.

Configs cross process boundaries (each actor builds its own environment from
one), so they hold only plain values and validate themselves on creation.
"""

import dataclasses
from typing import Optional

from environments import tasks


@dataclasses.dataclass(frozen=True)
class PixelConfig:
    """Pixel observations rendered offscreen by MuJoCo."""

    height: int = 84
    width: int = 84
    # MuJoCo camera index; 0 is the task's default tracking camera for most suite tasks
    # (quadruped looks best with 2).
    camera_id: int = 0
    # The observation holds the newest this many frames, oldest first: uint8 [S, H, W, 3].
    # At an episode's first step every slot holds its first frame. 3 is DrQ-v2's and Acme's.
    frame_stack: int = 3
    # MuJoCo's shadows. Rendering on a CPU (Mesa's llvmpipe), they cost most of a frame's time
    # (docs/pixels.md, "Shadows", and its files under experiments/results/); on a GPU next to nothing.
    shadows: bool = True
    # Also return the flattened state vector: observation becomes
    # {'pixels': uint8 [S, H, W, 3], 'state': float32 [D]} (for inspection: training takes one or the other).
    include_state: bool = False

    def __post_init__(self):
        for name in ("height", "width", "frame_stack"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"PixelConfig.{name} must be a positive integer, got {value!r}.")
        if not isinstance(self.camera_id, int) or self.camera_id < -1:
            raise ValueError(
                f"PixelConfig.camera_id must be an integer >= -1 (-1 is the free camera), "
                f"got {self.camera_id!r}."
            )


@dataclasses.dataclass(frozen=True)
class EnvironmentConfig:
    """One dm_control suite task as Relay's actors see it."""

    # "domain:task", e.g. "walker:walk"; environments.task_names() lists them all.
    task: str
    # Seeds the task's initial-state randomness; same seed and actions, same episode.
    seed: int = 0
    # Each agent action is applied this many times; rewards are summed (discounted by
    # the task's own per-step discount), the last observation is returned.
    action_repeat: int = 1
    # Episode length in agent steps (after action repeat). None keeps the task's own
    # limit (1000 control steps for most suite tasks, so 1000 / action_repeat agent steps).
    max_episode_steps: Optional[int] = None
    # None: state observations (one float32 vector). Set: pixel observations.
    pixels: Optional[PixelConfig] = None

    def __post_init__(self):
        tasks.parse_task_name(self.task)  # raises with the list of valid names
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"EnvironmentConfig.seed must be a non-negative integer, got {self.seed!r}.")
        if not isinstance(self.action_repeat, int) or self.action_repeat < 1:
            raise ValueError(
                f"EnvironmentConfig.action_repeat must be an integer >= 1, got {self.action_repeat!r}."
            )
        if self.max_episode_steps is not None and (
            not isinstance(self.max_episode_steps, int) or self.max_episode_steps < 1
        ):
            raise ValueError(
                "EnvironmentConfig.max_episode_steps must be None (the task's own limit) or an "
                f"integer >= 1, got {self.max_episode_steps!r}."
            )
