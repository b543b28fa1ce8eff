"""MPO's policy losses as pure functions (Abdolmaleki et al. 2018, decoupled KL).

Shapes: N sampled actions per state, B states, A action dimensions. Q values and
weights are [N, B]; sampled actions [N, B, A].
"""

import chex
import jax
import jax.numpy as jnp

from agents import distributions
from agents.distributions import DiagonalGaussian


def e_step_weights(q_values: chex.Array, temperature: chex.Array) -> chex.Array:
    """Non-parametric improved policy q(a|s) ∝ exp(Q/η) over the N samples: [N, B]."""
    return jax.nn.softmax(q_values / temperature, axis=0)


def temperature_dual_loss(q_values: chex.Array, temperature: chex.Array, epsilon: float) -> chex.Array:
    """η (ε + mean_B log mean_N exp(Q/η)); minimising it over η makes KL(q || uniform) = ε."""
    num_samples = q_values.shape[0]
    log_mean_exp = jax.nn.logsumexp(q_values / temperature, axis=0) - jnp.log(num_samples)
    return temperature * (epsilon + jnp.mean(log_mean_exp))


def kl_to_uniform(weights: chex.Array) -> chex.Array:
    """Mean over states of KL(weights || uniform over the N samples)."""
    num_samples = weights.shape[0]
    return jnp.mean(jnp.sum(weights * jnp.log(weights * num_samples + 1e-30), axis=0))


def action_penalty(actions: chex.Array) -> chex.Array:
    """MO-MPO's penalty objective: minus the distance of each action to [-1, 1]^A, [N, B]."""
    return -jnp.linalg.norm(actions - jnp.clip(actions, -1.0, 1.0), axis=-1)


def decoupled_m_step(
    online: DiagonalGaussian,
    target: DiagonalGaussian,
    sampled_actions: chex.Array,
    weights: chex.Array,
):
    """Weighted log-likelihood with the mean and the stddev fitted separately.

    The mean is fitted through N(μ_online, σ_target) and the stddev through
    N(μ_target, σ_online), so each has its own KL constraint to the target policy.
    Returns (mean loss, stddev loss, per-dim KL of the mean part [A], of the stddev part [A]).
    """
    fixed_stddev = DiagonalGaussian(mean=online.mean, stddev=target.stddev)
    fixed_mean = DiagonalGaussian(mean=target.mean, stddev=online.stddev)
    # [N, B] log-likelihoods of the sampled actions.
    loss_mean = -jnp.mean(jnp.sum(weights * distributions.gaussian_log_prob(fixed_stddev, sampled_actions), axis=0))
    loss_stddev = -jnp.mean(jnp.sum(weights * distributions.gaussian_log_prob(fixed_mean, sampled_actions), axis=0))
    kl_mean = jnp.mean(distributions.gaussian_kl_per_dim(target, fixed_stddev), axis=0)  # [A]
    kl_stddev = jnp.mean(distributions.gaussian_kl_per_dim(target, fixed_mean), axis=0)  # [A]
    return loss_mean, loss_stddev, kl_mean, kl_stddev


def kl_constraint_losses(kl: chex.Array, alpha: chex.Array, epsilon: float):
    """Lagrangian of KL <= ε per dimension: (loss for the policy, loss for the dual α).

    The policy sees α fixed and the dual sees the KL fixed, so one gradient step on
    their sum is gradient descent for the policy and ascent on the constraint for α.
    """
    policy_loss = jnp.sum(jax.lax.stop_gradient(alpha) * kl)
    alpha_loss = jnp.sum(alpha * (epsilon - jax.lax.stop_gradient(kl)))
    return policy_loss, alpha_loss
