"""The learners' distributions against independent computations (SciPy, numerical integration, hand values)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from agents import distributions
from agents.distributions import DiagonalGaussian, GaussianMixture


def test_gaussian_log_prob_matches_scipy():
    mean, stddev = np.array([0.3, -1.0, 2.0]), np.array([0.5, 1.5, 0.1])
    x = np.array([[0.0, 0.0, 2.05], [1.0, -2.0, 1.9]])
    ours = distributions.gaussian_log_prob(DiagonalGaussian(mean=jnp.array(mean), stddev=jnp.array(stddev)), jnp.array(x))
    expected = stats.norm.logpdf(x, mean, stddev).sum(axis=-1)
    np.testing.assert_allclose(ours, expected, rtol=1e-5)


def test_per_dimension_kl_equals_numerical_integral():
    p = DiagonalGaussian(mean=jnp.array([0.0, 1.0, -0.5]), stddev=jnp.array([1.0, 0.3, 2.0]))
    q = DiagonalGaussian(mean=jnp.array([0.5, 1.0, 0.5]), stddev=jnp.array([1.0, 0.6, 1.0]))
    ours = np.asarray(distributions.gaussian_kl_per_dim(p, q))
    for d in range(3):
        mp, sp, mq, sq = float(p.mean[d]), float(p.stddev[d]), float(q.mean[d]), float(q.stddev[d])

        def integrand(x):
            return stats.norm.pdf(x, mp, sp) * (stats.norm.logpdf(x, mp, sp) - stats.norm.logpdf(x, mq, sq))

        expected, _ = integrate.quad(integrand, mp - 12 * sp, mp + 12 * sp)
        assert ours[d] == pytest.approx(expected, rel=1e-4, abs=1e-7)
    # Same mean, same stddev: zero; only the mean differs: (Δμ)² / (2σ²).
    assert ours[0] == pytest.approx(0.25 / 2, rel=1e-6)


def test_projection_conserves_mass():
    rng = np.random.default_rng(0)
    support = jnp.linspace(-10.0, 10.0, 51)
    atoms = jnp.array(rng.uniform(-15, 15, (8, 30)), jnp.float32)  # some outside the support
    probs = jax.nn.softmax(jnp.array(rng.normal(size=(8, 30)), jnp.float32))
    projected = distributions.categorical_projection(atoms, probs, support)
    np.testing.assert_allclose(projected.sum(-1), 1.0, rtol=1e-6)
    assert float(projected.min()) >= 0.0


def test_reward_of_one_spacing_shifts_by_exactly_one_atom():
    support = jnp.linspace(-2.0, 2.0, 9)  # spacing 0.5
    probs = jnp.array([0.0, 0.1, 0.2, 0.3, 0.25, 0.1, 0.05, 0.0, 0.0])
    shifted = support + 0.5  # r = one spacing, γ = 1
    projected = distributions.categorical_projection(shifted, probs, support)
    np.testing.assert_allclose(projected, jnp.roll(probs, 1), atol=1e-7)


def test_projection_splits_mass_between_neighbours_by_distance():
    support = jnp.array([0.0, 1.0, 2.0])
    projected = distributions.categorical_projection(jnp.array([0.25, 5.0]), jnp.array([0.8, 0.2]), support)
    # 0.25 -> 75% on 0, 25% on 1; 5.0 is clipped to the top atom.
    np.testing.assert_allclose(projected, [0.6, 0.2, 0.2], atol=1e-7)


def test_mixture_log_prob_matches_scipy():
    logits = np.array([[0.1, -0.3, 1.2], [0.0, 0.0, 0.0]])
    means = np.array([[-1.0, 0.5, 3.0], [10.0, 11.0, 12.0]])
    stddevs = np.array([[0.5, 1.0, 0.2], [1.0, 0.1, 2.0]])
    x = np.array([[0.0, 10.5], [2.9, 13.0], [-1.2, 11.0]])  # [S=3, B=2]
    mixture = GaussianMixture(logits=jnp.array(logits), means=jnp.array(means), stddevs=jnp.array(stddevs))
    ours = distributions.mixture_log_prob(mixture, jnp.array(x))
    weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = np.log((weights * stats.norm.pdf(x[..., None], means, stddevs)).sum(-1))
    np.testing.assert_allclose(ours, expected, rtol=1e-5)


def test_mixture_samples_have_the_mixture_moments():
    mixture = GaussianMixture(
        logits=jnp.log(jnp.array([0.2, 0.8])), means=jnp.array([-2.0, 3.0]), stddevs=jnp.array([0.5, 1.0])
    )
    keys = jax.random.split(jax.random.PRNGKey(0), 40_000)
    samples = jax.vmap(lambda k: distributions.mixture_sample(mixture, k))(keys)
    mean = 0.2 * -2.0 + 0.8 * 3.0
    variance = 0.2 * (0.25 + 4.0) + 0.8 * (1.0 + 9.0) - mean**2
    assert float(samples.mean()) == pytest.approx(mean, abs=0.05)
    assert float(samples.var()) == pytest.approx(variance, rel=0.03)
    assert float(distributions.mixture_mean(mixture)) == pytest.approx(mean, rel=1e-6)
