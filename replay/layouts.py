"""Which items a run's replay holds, read off its environment spec, and the writer that makes them.

    layout = replay.layout_of(spec)    # TransitionLayout (state) or FrameLayout (pixels)
    table = reverb.Table(..., signature=layout.signature())
    writer = replay.make_writer(client, config, table_name, layout=layout)
    dataset = replay.make_dataset(address, config, layout)

State runs (observation float32 [D]) pack each transition into one float32 vector
(`replay.writer`); pixel runs (observation uint8 [S, H, W, 3], a stack of S frames) store each
frame once and reference it from the items (`replay.frame_writer`).
"""

from typing import Optional, Union

import numpy as np
import reverb
from acme import specs

from replay.frame_writer import FrameLayout, FrameWriter
from replay.writer import NStepWriter, TransitionLayout

Layout = Union[TransitionLayout, FrameLayout]


def layout_of(spec: specs.EnvironmentSpec) -> Layout:
    """The items of a run with this environment spec; ValueError for observations replay cannot hold."""
    observations = spec.observations
    if isinstance(observations, dict):
        raise ValueError(f"Observations are a dict ({', '.join(sorted(observations))}): PixelConfig.include_state "
                         "is for inspection; training takes pixels or state, not both.")
    shape, dtype = tuple(observations.shape), np.dtype(observations.dtype)
    if len(spec.actions.shape) != 1:
        raise ValueError(f"Replay stores flat actions; got actions of shape {spec.actions.shape}.")
    if len(shape) == 1 and dtype == np.float32:
        return TransitionLayout(shape[0], spec.actions.shape[0])
    if len(shape) == 4 and dtype == np.uint8 and shape[-1] == 3:
        return FrameLayout(frame_shape=shape[1:], frame_stack=shape[0], action_dim=spec.actions.shape[0])
    raise ValueError(f"Replay holds state observations float32 [D] or frame stacks uint8 [S, H, W, 3]; got "
                     f"{dtype} {list(shape)}.")


def transition_signature(spec: specs.EnvironmentSpec) -> dict:
    """The structure (and dtype, shape) of one item of a run with this spec."""
    return layout_of(spec).signature()


def make_writer(client: reverb.Client, config, table: str, num_envs: int = 1,
                layout: Optional[Layout] = None) -> Union[NStepWriter, FrameWriter]:
    """The writer for `table` with the n and γ of a ReplayConfig: frames for a FrameLayout,
    packed state vectors otherwise (None: a state run, as before layouts)."""
    if isinstance(layout, FrameLayout):
        return FrameWriter(client, table, n_step=config.n_step, discount=config.discount, num_envs=num_envs,
                           frame_stack=layout.frame_stack)
    return NStepWriter(client, table, n_step=config.n_step, discount=config.discount, num_envs=num_envs)
