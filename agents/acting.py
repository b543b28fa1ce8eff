"""Action selection for actors and evaluators, jitted for one observation on the CPU."""

import copy

import jax

from agents.distributions import gaussian_sample
from agents.learning import Networks


def make_policy_fns(networks: Networks):
    """Returns jitted (select_action(params, obs, key), greedy_action(params, obs)).

    params are `Networks.acting_params`; obs is [O] (or batched [..., O]), or a frame stack
    uint8 [S, H, W, 3] (or [..., S, H, W, 3]); actions are float32 [A] (or [..., A]), not
    clipped: the environment clips them to [-1, 1], and the replayed action is the
    one the policy sampled.
    """
    # The same function and params, with the layer norm's form that is fast for a few rows.
    networks = copy.copy(networks)
    networks.policy = networks.policy.clone(use_fast_variance=False)

    @jax.jit
    def select_action(params, observation, key):
        return gaussian_sample(networks.act(params, observation), key, 1)[0]

    @jax.jit
    def greedy_action(params, observation):
        return networks.act(params, observation).mean

    return select_action, greedy_action


def params_on_cpu(params):
    """The policy params as arrays on the CPU device, placed once per fetch.

    Actors and evaluators get numpy params from the learner; a jitted call converts
    every numpy leaf on every call, ~20-35 us of a ~100 us physics step.
    """
    return jax.device_put(params, jax.local_devices(backend="cpu")[0])
