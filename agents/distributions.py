"""The distributions the learners need, as pure functions on arrays.

Diagonal Gaussians (the policy), categorical distributions on a fixed support
(DMPO's critic) and mixtures of 1-D Gaussians (the mixture critic). Written out
rather than taken from a distributions library so that `agents/` depends only on
jax, flax, optax and chex.
"""

import math

import chex
import jax
import jax.numpy as jnp

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


# --- Diagonal Gaussian -------------------------------------------------------


@chex.dataclass(frozen=True)
class DiagonalGaussian:
    """Independent normal per action dimension; `mean` and `stddev` are [..., A]."""

    mean: chex.Array
    stddev: chex.Array


def gaussian_sample(dist: DiagonalGaussian, key: chex.PRNGKey, num_samples: int) -> chex.Array:
    """[num_samples, ..., A] samples."""
    noise = jax.random.normal(key, (num_samples,) + dist.mean.shape, dist.mean.dtype)
    return dist.mean + dist.stddev * noise


def gaussian_log_prob(dist: DiagonalGaussian, x: chex.Array) -> chex.Array:
    """Log-density of x [..., A] summed over the action dimension: [...]."""
    z = (x - dist.mean) / dist.stddev
    return jnp.sum(-0.5 * jnp.square(z) - jnp.log(dist.stddev) - _LOG_SQRT_2PI, axis=-1)


def gaussian_kl_per_dim(p: DiagonalGaussian, q: DiagonalGaussian) -> chex.Array:
    """KL(p || q) of each action dimension, [..., A]."""
    variance_ratio = jnp.square(p.stddev / q.stddev)
    mean_term = jnp.square((p.mean - q.mean) / q.stddev)
    return 0.5 * (variance_ratio + mean_term - 1.0 - jnp.log(variance_ratio))


# --- Categorical on a fixed support -------------------------------------------


def categorical_projection(atoms: chex.Array, probs: chex.Array, support: chex.Array) -> chex.Array:
    """Projects a distribution with mass `probs` at `atoms` onto the evenly spaced `support`.

    The L2 (Cramér) projection of C51: each atom's mass is split between its two
    neighbours on the support in proportion to closeness; atoms outside the support
    go to its ends. Mass is conserved, and a distribution whose atoms already lie on
    the support is unchanged.

    Args:
      atoms: [..., M] positions of the input distribution's atoms.
      probs: [..., M] their probabilities.
      support: [K] evenly spaced target atoms.
    Returns:
      [..., K] probabilities on `support`.
    """
    v_min, v_max = support[0], support[-1]
    spacing = (v_max - v_min) / (support.shape[0] - 1)
    clipped = jnp.clip(atoms, v_min, v_max)
    # Distance of every input atom to every support atom, in units of spacing: [..., M, K].
    distance = jnp.abs(clipped[..., :, None] - support) / spacing
    weight = jnp.clip(1.0 - distance, 0.0, 1.0)
    return jnp.sum(probs[..., :, None] * weight, axis=-2)


# --- Mixture of 1-D Gaussians ------------------------------------------------


@chex.dataclass(frozen=True)
class GaussianMixture:
    """A mixture of K scalar Gaussians; each field is [..., K]."""

    logits: chex.Array
    means: chex.Array
    stddevs: chex.Array


def mixture_mean(mixture: GaussianMixture) -> chex.Array:
    return jnp.sum(jax.nn.softmax(mixture.logits, axis=-1) * mixture.means, axis=-1)


def mixture_log_prob(mixture: GaussianMixture, x: chex.Array) -> chex.Array:
    """log p(x) under each mixture; x is [S, ...] samples for mixtures [..., K]: [S, ...]."""
    x = x[..., None]  # [S, ..., 1]
    z = (x - mixture.means) / mixture.stddevs
    component_log_prob = -0.5 * jnp.square(z) - jnp.log(mixture.stddevs) - _LOG_SQRT_2PI
    log_weights = jax.nn.log_softmax(mixture.logits, axis=-1)
    return jax.nn.logsumexp(component_log_prob + log_weights, axis=-1)


def mixture_sample(mixture: GaussianMixture, key: chex.PRNGKey, num_samples: int = 1) -> chex.Array:
    """`num_samples` independent samples from each mixture: [num_samples, ...]."""
    component_key, noise_key = jax.random.split(key)
    shape = (num_samples,) + mixture.logits.shape[:-1]
    component = jax.random.categorical(component_key, mixture.logits, axis=-1, shape=shape)[..., None]
    # Every sample row indexes the same mixtures: broadcast them along the sample axis.
    means = jnp.broadcast_to(mixture.means, shape + mixture.means.shape[-1:])
    stddevs = jnp.broadcast_to(mixture.stddevs, shape + mixture.stddevs.shape[-1:])
    mean = jnp.take_along_axis(means, component, axis=-1)[..., 0]
    stddev = jnp.take_along_axis(stddevs, component, axis=-1)[..., 0]
    return mean + stddev * jax.random.normal(noise_key, shape, mean.dtype)
