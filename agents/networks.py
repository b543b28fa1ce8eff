"""Policy and critic networks (flax.linen).

Torsos are Acme's LayerNormMLP: Dense -> LayerNorm -> tanh for the first layer
(keeps the scale of raw observations in check), then Dense -> ELU for the rest.
"""

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from agents.distributions import DiagonalGaussian

_uniform_scaling = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def elu(x: jax.Array) -> jax.Array:
    """ELU with exp(x) - 1 rather than expm1(x): the same function to ~1e-7, and about
    3x cheaper on XLA:CPU, where the critic's activations cost as much as a matmul."""
    return jnp.where(x > 0, x, jnp.exp(jnp.minimum(x, 0.0)) - 1.0)


def softplus_inverse(y: float) -> float:
    """x with softplus(x) = y; log(expm1(y)) written so it does not overflow for large y."""
    return float(y + np.log(-np.expm1(-y)))


class LayerNormMLP(nn.Module):
    layer_sizes: Sequence[int]
    # XLA:CPU turns the one-pass (fast) variance into a oneDNN layer norm: ~1.5x faster for
    # the learner's batches, ~20 us slower for an actor's few rows. The params are the same.
    use_fast_variance: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Dense(self.layer_sizes[0], kernel_init=_uniform_scaling)(x)
        x = jnp.tanh(nn.LayerNorm(use_fast_variance=self.use_fast_variance)(x))
        for size in self.layer_sizes[1:]:
            x = elu(nn.Dense(size, kernel_init=_uniform_scaling)(x))
        return x


class GaussianPolicy(nn.Module):
    """Observation [..., O] -> DiagonalGaussian over actions [..., A] (no tanh squashing)."""

    action_dim: int
    layer_sizes: Sequence[int] = (256, 256, 256)
    init_scale: float = 0.7
    min_scale: float = 1e-6
    use_fast_variance: bool = True  # see LayerNormMLP

    @nn.compact
    def __call__(self, observation: jax.Array) -> DiagonalGaussian:
        features = LayerNormMLP(self.layer_sizes, self.use_fast_variance)(observation)
        # Small initial weights: the first policy is centred on 0 with stddev init_scale.
        small = nn.initializers.variance_scaling(1e-4, "fan_in", "uniform")
        mean = nn.Dense(self.action_dim, kernel_init=small, name="mean")(features)
        raw_scale = nn.Dense(self.action_dim, kernel_init=small, name="scale")(features)
        stddev = jax.nn.softplus(raw_scale + softplus_inverse(self.init_scale)) + self.min_scale
        return DiagonalGaussian(mean=mean, stddev=stddev)


class Critic(nn.Module):
    """(observation [..., O], action [..., A]) -> head outputs [..., output_size].

    Actions are clipped to [-1, 1] first: the environment clips them the same way,
    so the critic values what is actually executed.
    """

    output_size: int
    layer_sizes: Sequence[int] = (512, 512, 256)
    # Set by the critic head: what its raw outputs mean decides how large they start.
    head_init: Callable = _uniform_scaling

    @nn.compact
    def __call__(self, observation: jax.Array, action: jax.Array) -> jax.Array:
        inputs = jnp.concatenate([observation, jnp.clip(action, -1.0, 1.0)], axis=-1)
        features = LayerNormMLP(self.layer_sizes)(inputs)
        return nn.Dense(self.output_size, kernel_init=self.head_init, name="head")(features)


class Trunk(nn.Module):
    """Encoder features -> a network's own small input: Dense -> LayerNorm -> tanh (DrQ-v2's trunk)."""

    features: int = 50

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Dense(self.features, kernel_init=_uniform_scaling)(x)
        return jnp.tanh(nn.LayerNorm()(x))


class PixelEncoder(nn.Module):
    """Frame stacks uint8 [..., S, H, W, 3] -> features float32 [..., F] (DrQ-v2's torso).

    The S frames become one image of 3S channels (oldest first); pixels are scaled to
    [-0.5, 0.5] here, on the device, so batches travel and are stored as uint8.
    """

    channels: int = 32
    strides: Sequence[int] = (2, 1, 1, 1)
    kernel_size: int = 3

    @nn.compact
    def __call__(self, frames: jax.Array) -> jax.Array:
        *lead, stack, height, width, colours = frames.shape
        images = jnp.moveaxis(frames.reshape((-1, stack, height, width, colours)), 1, 3)  # [N, H, W, S, 3]
        x = images.reshape((-1, height, width, stack * colours)).astype(jnp.float32) / 255.0 - 0.5
        # Orthogonal with gain sqrt(2), for the ReLUs (the reference implementation's choice).
        kernel_init = nn.initializers.orthogonal(np.sqrt(2.0))
        for stride in self.strides:
            x = nn.Conv(self.channels, (self.kernel_size, self.kernel_size), strides=stride, padding="VALID",
                        kernel_init=kernel_init)(x)
            x = jax.nn.relu(x)
        return x.reshape(tuple(lead) + (-1,))
