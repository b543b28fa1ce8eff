"""Each critic head's loss against a value computed independently."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from agents.config import CategoricalHead, MixtureHead, ScalarHead
from agents.critic_heads import make_critic_head


def test_scalar_loss_by_hand():
    head = make_critic_head(ScalarHead())
    online = jnp.array([[1.0], [2.0]])  # [B=2, 1]
    target = jnp.array([[[3.0], [0.0]], [[5.0], [2.0]]])  # [N=2, B=2, 1]: means 4 and 1
    reward, discount = jnp.array([0.5, 1.0]), jnp.array([0.5, 0.0])
    loss, _ = head.loss(online, target, reward, discount, jax.random.PRNGKey(0))
    td_targets = np.array([0.5 + 0.5 * 4.0, 1.0])
    assert float(loss) == pytest.approx(np.mean(0.5 * (td_targets - [1.0, 2.0]) ** 2))


def test_categorical_loss_by_hand():
    head = make_critic_head(CategoricalHead(num_atoms=3, v_min=0.0, v_max=2.0))
    target_logits = jnp.log(jnp.array([[[0.5, 0.5, 0.0 + 1e-30]], [[0.5, 0.5, 1e-30]]]))  # [N=2, B=1, K=3]
    online = jnp.array([[0.0, 1.0, 2.0]])
    # r = 1, discount = 1: mass at atoms {0, 1} moves to {1, 2}.
    loss, _ = head.loss(online, target_logits, jnp.array([1.0]), jnp.array([1.0]), jax.random.PRNGKey(0))
    log_p = np.log(np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum())
    assert float(loss) == pytest.approx(-(0.5 * log_p[1] + 0.5 * log_p[2]), rel=1e-5)
    # Expected Q is the mean over atoms.
    assert float(head.expected_q(jnp.log(jnp.array([0.25, 0.25, 0.5])))) == pytest.approx(1.25, rel=1e-6)


def _softplus(x):
    return np.log1p(np.exp(x))


def test_mixture_loss_equals_scipy_negative_log_likelihood():
    """Targets from a mixture that is one narrow component (weight 1 - 1e-17, stddev 1e-4), so
    every sampled return is r + discount x that component's mean, up to ~1e-4; the expected loss
    is then worked out from the raw outputs with NumPy and SciPy alone."""
    init_scale = 0.5
    head = make_critic_head(MixtureHead(num_components=2, init_scale=init_scale, num_value_samples=3))
    rng = np.random.default_rng(0)
    online = rng.normal(size=(3, 6)).astype(np.float32)  # [B=3, 3K]: logits, means, raw scales
    target = rng.normal(size=(4, 3, 6)).astype(np.float32)  # [N=4, B=3, 3K]
    target[..., 0], target[..., 1] = 20.0, -20.0  # component 0 only
    target[..., 4:6] = -40.0  # softplus(-40) ~ 4e-18: stddev = the 1e-4 floor
    reward, discount = np.array([0.1, 0.5, -0.2], np.float32), np.array([0.9, 0.0, 0.5], np.float32)
    loss, _ = head.loss(jnp.asarray(online), jnp.asarray(target), jnp.asarray(reward), jnp.asarray(discount),
                        jax.random.PRNGKey(7))

    returns = reward + discount * target[..., 2]  # [N, B]
    weights = np.exp(online[:, :2]) / np.exp(online[:, :2]).sum(-1, keepdims=True)  # [B, K]
    means = online[:, 2:4]
    stddevs = init_scale * _softplus(online[:, 4:6].astype(np.float64)) / np.log(2.0) + 1e-4
    likelihood = (weights * stats.norm.pdf(returns[..., None], means, stddevs)).sum(-1)  # [N, B]
    assert float(loss) == pytest.approx(-np.log(likelihood).mean(), rel=1e-4)


def test_mixture_stddevs_start_at_init_scale_and_grow_in_its_units():
    head = make_critic_head(MixtureHead(num_components=5, init_scale=1e-3))
    np.testing.assert_allclose(head.mixture(jnp.zeros((15,))).stddevs, 1e-3 + 1e-4, rtol=1e-5)
    # stddev = init_scale * softplus(raw) / log 2 + 1e-4: raw = 10 gives ~14.4x init_scale.
    raw = jnp.concatenate([jnp.zeros((10,)), jnp.full((5,), 10.0)])
    np.testing.assert_allclose(head.mixture(raw).stddevs, 1e-3 * np.log1p(np.exp(10.0)) / np.log(2) + 1e-4, rtol=1e-5)


def test_distributional_heads_start_the_same_for_every_input():
    """Near-zero output layers: the categorical starts uniform (Q = centre of the support),
    the mixture at 0 with its initial scale, whatever the observation and action."""
    from agents.learning import Networks
    import agents

    rng = np.random.default_rng(0)
    observation = jnp.array(rng.normal(size=(64, 5)), jnp.float32)
    action = jnp.array(rng.uniform(-1, 1, size=(64, 1)), jnp.float32)
    for agent, centre in (("dmpo", 0.0), ("mog", 0.0)):
        networks = Networks(agents.make_config(agent), action_dim=1)
        params = networks.critic.init(jax.random.PRNGKey(0), observation, action)
        q = np.asarray(networks.head.expected_q(networks.critic.apply(params, observation, action)))
        assert np.abs(q - centre).max() < 0.05, (agent, np.abs(q).max())
