"""What the critic's outputs mean, and how each kind is trained.

Each head turns the critic network's raw outputs into an expected Q (for the
E-step) and a loss against bootstrapped targets. The target outputs are those of
the target critic at the next observations for N target-policy actions, [N, B, o];
`discount` is the full bootstrap factor (γ^n times the episode's continuation).
"""

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from agents import distributions
from agents.config import CategoricalHead, CriticHead, MixtureHead, ScalarHead

# Output-layer initialisers (Acme's): a distributional head starts as the same
# near-uniform categorical or the same narrow mixture at 0 for every input, so the
# first E-steps do not chase random differences between actions' values.
_NEAR_ZERO = nn.initializers.variance_scaling(1e-5, "fan_in", "truncated_normal")
_SMALL_NORMAL = nn.initializers.truncated_normal(0.01)


class ScalarCritic:
    """Q(s, a) directly; squared TD error against the mean of N bootstrapped values."""

    output_size = 1
    kernel_init = staticmethod(_SMALL_NORMAL)

    def __init__(self, config: ScalarHead):
        self.config = config

    def expected_q(self, outputs: chex.Array) -> chex.Array:
        return outputs[..., 0]

    def loss(self, online, target, reward, discount, key):
        del key
        bootstrap = jnp.mean(target[..., 0], axis=0)  # [B]
        td_target = jax.lax.stop_gradient(reward + discount * bootstrap)
        q = online[..., 0]
        return jnp.mean(0.5 * jnp.square(td_target - q)), {"q_mean": jnp.mean(q)}


class CategoricalCritic:
    """DMPO: cross-entropy to the projected, shifted target distribution."""

    kernel_init = staticmethod(_NEAR_ZERO)

    def __init__(self, config: CategoricalHead):
        self.config = config
        self.output_size = config.num_atoms
        self.atoms = jnp.linspace(config.v_min, config.v_max, config.num_atoms)

    def expected_q(self, outputs: chex.Array) -> chex.Array:
        return jnp.sum(jax.nn.softmax(outputs, axis=-1) * self.atoms, axis=-1)

    def loss(self, online, target, reward, discount, key):
        del key
        # The target is the mixture over the N sampled actions. Projection is linear in the
        # probabilities, so mixing first and projecting once equals projecting each of the
        # N distributions and mixing: N times less work.
        target_probs = jnp.mean(jax.nn.softmax(target, axis=-1), axis=0)  # [B, K]
        shifted_atoms = reward[:, None] + discount[:, None] * self.atoms  # [B, K]
        projected = distributions.categorical_projection(shifted_atoms, target_probs, self.atoms)
        projected = jax.lax.stop_gradient(projected)
        cross_entropy = -jnp.sum(projected * jax.nn.log_softmax(online, axis=-1), axis=-1)
        return jnp.mean(cross_entropy), {"q_mean": jnp.mean(self.expected_q(online))}


class MixtureCritic:
    """Mixture of Gaussians; negative log-likelihood of sampled targets r + γ^n z.

    z are `num_value_samples` samples of the target critic's mixture at each of the N
    target-policy actions (Shahriari et al. 2022).
    """

    # Below this the likelihood's gradients explode.
    min_stddev = 1e-4
    kernel_init = staticmethod(_NEAR_ZERO)

    def __init__(self, config: MixtureHead):
        self.config = config
        self.output_size = 3 * config.num_components
        self._stddev_unit = config.init_scale / math.log(2.0)  # init_scale / softplus(0)

    def mixture(self, outputs: chex.Array) -> distributions.GaussianMixture:
        logits, means, raw_scales = jnp.split(outputs, 3, axis=-1)
        stddevs = self._stddev_unit * jax.nn.softplus(raw_scales) + self.min_stddev
        return distributions.GaussianMixture(logits=logits, means=means, stddevs=stddevs)

    def expected_q(self, outputs: chex.Array) -> chex.Array:
        return distributions.mixture_mean(self.mixture(outputs))

    def loss(self, online, target, reward, discount, key):
        z = distributions.mixture_sample(self.mixture(target), key, self.config.num_value_samples)  # [Z, N, B]
        samples = jax.lax.stop_gradient(reward + discount * z)  # [Z, N, B]
        online_mixture = self.mixture(online)  # [B, K]
        log_prob = distributions.mixture_log_prob(online_mixture, samples)  # [Z, N, B]
        return -jnp.mean(log_prob), {"q_mean": jnp.mean(distributions.mixture_mean(online_mixture))}


def make_critic_head(config: CriticHead):
    heads = {ScalarHead: ScalarCritic, CategoricalHead: CategoricalCritic, MixtureHead: MixtureCritic}
    return heads[type(config)](config)
