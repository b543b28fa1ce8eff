"""The learner as a process uses it: jitted, data-parallel over the local devices.

This is the impure shell around the pure step in `learning.py` and the one place
with a jit boundary for learning: the state is replicated on every device, each
batch is split along its leading (batch) axis, and XLA's SPMD partitioner turns
the batch means in the losses into cross-device averages of the gradients. The
state argument is donated: the caller must use the returned state.
"""

from typing import Optional, Sequence, Union

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from agents import learning
from agents.config import MPOConfig
from agents.types import LearnerState


class Learner:
    def __init__(
        self,
        config: MPOConfig,
        observation_shape: Union[int, Sequence[int]],
        action_dim: int,
        devices: Optional[Sequence[jax.Device]] = None,
        jit: bool = True,
    ):
        """observation_shape: a state vector's size O (batches' observations float32 [B, O]), or a
        frame stack's (S, H, W, 3) (uint8 [B, S, H, W, 3], encoded on the device).
        `jit=False` runs the same step eagerly (for debugging; single device only)."""
        self.config = config
        self.observation_shape = (observation_shape,) if isinstance(observation_shape, int) else tuple(observation_shape)
        self.action_dim = action_dim
        self.networks = learning.Networks(config, action_dim, self.observation_shape)
        self.devices = list(devices) if devices is not None else jax.local_devices()
        self.mesh = Mesh(np.array(self.devices), ("data",))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec("data"))
        self.stacked_batch_sharding = NamedSharding(self.mesh, PartitionSpec(None, "data"))

        update_step = learning.make_update_step(config, self.networks)
        multi_step = learning.make_multi_step(update_step)
        # update(state, batch [B, ...]) -> (state, metrics): one SGD step.
        # update_many(state, batches [k, B, ...]) -> (state, metrics): k steps in one call (lax.scan).
        # From pixels on XLA:CPU, prefer `update`: inside the scan the encoder's kernel gradients
        # miss XLA:CPU's Eigen convolutions, ~18x slower (experiments/results/README.md, "pixels").
        # Both are the jitted functions themselves, so they can be lowered for cost analysis.
        if jit:
            self.update = jax.jit(
                update_step,
                in_shardings=(self.replicated, self.batch_sharding),
                out_shardings=(self.replicated, self.replicated),
                donate_argnums=0,
            )
            self.update_many = jax.jit(
                multi_step,
                in_shardings=(self.replicated, self.stacked_batch_sharding),
                out_shardings=(self.replicated, self.replicated),
                donate_argnums=0,
            )
        else:
            if len(self.devices) != 1:
                raise ValueError("Learner(jit=False) runs on one device; pass devices=[one device].")
            self.update, self.update_many = update_step, multi_step

    def init(self, key: jax.Array) -> LearnerState:
        state = learning.init_state(self.config, self.networks, key, self.observation_shape, self.action_dim)
        return jax.device_put(state, self.replicated)

    def check_batch_size(self, batch_size: int):
        if batch_size % len(self.devices):
            raise ValueError(
                f"Batch size {batch_size} does not split over {len(self.devices)} devices; "
                f"use a multiple of {len(self.devices)}."
            )
