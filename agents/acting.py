"""Action selection for actors and evaluators, jitted for one observation on the CPU."""

import jax
import jax.numpy as jnp

from agents.distributions import gaussian_sample
from agents.networks import GaussianPolicy


def make_policy_fns(policy: GaussianPolicy):
    """Returns jitted (select_action(params, obs, key), greedy_action(params, obs)).

    obs is [O] (or batched [..., O]); actions are float32 [A] (or [..., A]), not
    clipped: the environment clips them to [-1, 1], and the replayed action is the
    one the policy sampled.
    """
    # The same function and params, with the layer norm's form that is fast for a few rows.
    policy = policy.clone(use_fast_variance=False)

    @jax.jit
    def select_action(params, observation, key):
        distribution = policy.apply(params, jnp.asarray(observation, jnp.float32))
        return gaussian_sample(distribution, key, 1)[0]

    @jax.jit
    def greedy_action(params, observation):
        return policy.apply(params, jnp.asarray(observation, jnp.float32)).mean

    return select_action, greedy_action


def params_on_cpu(params):
    """The policy params as arrays on the CPU device, placed once per fetch.

    Actors and evaluators get numpy params from the learner; a jitted call converts
    every numpy leaf on every call, ~20-35 us of a ~100 us physics step.
    """
    return jax.device_put(params, jax.local_devices(backend="cpu")[0])
