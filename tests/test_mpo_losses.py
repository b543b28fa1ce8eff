"""MPO's E-step, temperature dual and M-step against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents import mpo_losses
from agents.distributions import DiagonalGaussian


def test_e_step_weights_are_a_softmax_over_samples():
    q = jnp.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])  # [N=3, B=2]
    weights = mpo_losses.e_step_weights(q, jnp.array(2.0))
    expected = np.exp(np.array([0.5, 1.0, 1.5])) / np.exp(np.array([0.5, 1.0, 1.5])).sum()
    np.testing.assert_allclose(weights[:, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(weights[:, 1], 1 / 3, rtol=1e-6)


def test_temperature_dual_value_by_hand():
    q = np.array([[0.0, 1.0], [2.0, 1.0]])  # [N=2, B=2]
    eta, eps = 0.5, 0.1
    log_mean_exp = np.log(np.exp(q / eta).mean(axis=0))
    expected = eta * (eps + log_mean_exp.mean())
    assert float(mpo_losses.temperature_dual_loss(jnp.array(q), jnp.array(eta), eps)) == pytest.approx(expected, rel=1e-6)


def test_optimised_temperature_makes_kl_to_uniform_epsilon():
    epsilon = 0.1
    q = jax.random.normal(jax.random.PRNGKey(0), (20, 64)) * 3.0  # fixed Q, [N, B]
    raw = jnp.array(0.0)  # softplus-parameterised η
    optimizer = optax.adam(0.05)
    opt_state = optimizer.init(raw)

    @jax.jit
    def step(raw, opt_state):
        grad = jax.grad(lambda r: mpo_losses.temperature_dual_loss(q, jax.nn.softplus(r), epsilon))(raw)
        updates, opt_state = optimizer.update(grad, opt_state)
        return optax.apply_updates(raw, updates), opt_state

    for _ in range(3000):
        raw, opt_state = step(raw, opt_state)
    kl = float(mpo_losses.kl_to_uniform(mpo_losses.e_step_weights(q, jax.nn.softplus(raw))))
    assert kl == pytest.approx(epsilon, rel=0.05)


def test_decoupled_kls_are_the_closed_forms():
    target = DiagonalGaussian(mean=jnp.array([[0.0, 1.0]]), stddev=jnp.array([[0.5, 2.0]]))
    online = DiagonalGaussian(mean=jnp.array([[0.3, 0.0]]), stddev=jnp.array([[1.0, 1.0]]))
    actions = jnp.zeros((4, 1, 2))
    weights = jnp.full((4, 1), 0.25)
    _, _, kl_mean, kl_stddev = mpo_losses.decoupled_m_step(online, target, actions, weights)
    # Mean part: N(μ_t, σ_t) vs N(μ_o, σ_t) = (μ_t - μ_o)² / (2 σ_t²).
    np.testing.assert_allclose(kl_mean, [0.09 / 0.5, 1.0 / 8.0], rtol=1e-6)
    # Stddev part: N(μ_t, σ_t) vs N(μ_t, σ_o) = log(σ_o/σ_t) + σ_t²/(2σ_o²) - 1/2.
    expected = [np.log(1 / 0.5) + 0.25 / 2 - 0.5, np.log(1 / 2.0) + 4.0 / 2 - 0.5]
    np.testing.assert_allclose(kl_stddev, expected, rtol=1e-6)


def test_m_step_loss_is_weighted_negative_log_likelihood():
    target = DiagonalGaussian(mean=jnp.array([[0.0]]), stddev=jnp.array([[1.0]]))
    online = DiagonalGaussian(mean=jnp.array([[0.5]]), stddev=jnp.array([[2.0]]))
    actions = jnp.array([[[1.0]], [[-1.0]]])  # [N=2, B=1, A=1]
    weights = jnp.array([[0.75], [0.25]])
    loss_mean, loss_stddev, _, _ = mpo_losses.decoupled_m_step(online, target, actions, weights)
    log_pdf = lambda x, m, s: -0.5 * ((x - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)  # noqa: E731
    expected_mean = -(0.75 * log_pdf(1.0, 0.5, 1.0) + 0.25 * log_pdf(-1.0, 0.5, 1.0))
    expected_stddev = -(0.75 * log_pdf(1.0, 0.0, 2.0) + 0.25 * log_pdf(-1.0, 0.0, 2.0))
    assert float(loss_mean) == pytest.approx(expected_mean, rel=1e-6)
    assert float(loss_stddev) == pytest.approx(expected_stddev, rel=1e-6)


def test_action_penalty_is_distance_to_the_box():
    actions = jnp.array([[[0.5, -0.2], [1.3, -1.4], [3.0, 0.0]]])  # [N=1, B=3, A=2]
    np.testing.assert_allclose(mpo_losses.action_penalty(actions), [[0.0, -0.5, -2.0]], rtol=1e-6)


def test_kl_constraint_gradients():
    kl, alpha, epsilon = jnp.array([0.3, 0.01]), jnp.array([2.0, 5.0]), 0.1

    def total(kl, alpha):
        policy_loss, alpha_loss = mpo_losses.kl_constraint_losses(kl, alpha, epsilon)
        return policy_loss + alpha_loss

    grad_kl, grad_alpha = jax.grad(total, argnums=(0, 1))(kl, alpha)
    np.testing.assert_allclose(grad_kl, alpha)  # the policy is pushed by α
    np.testing.assert_allclose(grad_alpha, epsilon - kl, rtol=1e-6)  # α grows while KL > ε
