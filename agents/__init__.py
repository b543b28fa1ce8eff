"""Learners (MPO, DMPO, mixture-critic MPO) in pure JAX.

Imports nothing of TensorFlow, Reverb or Launchpad, so that it runs unchanged on
any accelerator image with a recent JAX.

    config = agents.make_config("mog")                 # or "mpo", "dmpo"
    learner = agents.Learner(config, observation_shape=24, action_dim=6)   # or (3, 84, 84, 3): frame stacks
    state = learner.init(jax.random.PRNGKey(0))
    state, metrics = learner.update(state, batch)      # batch: agents.Transition [B, ...]
"""

from agents.acting import make_policy_fns, params_on_cpu
from agents.config import (AGENT_HEADS, CategoricalHead, MixtureHead, MPOConfig, PixelEncoderConfig, ScalarHead,
                           make_config)
from agents.learner import Learner
from agents.learning import Networks
from agents.types import DualParams, LearnerState, Transition

__all__ = [
    "AGENT_HEADS",
    "CategoricalHead",
    "DualParams",
    "Learner",
    "LearnerState",
    "MPOConfig",
    "MixtureHead",
    "Networks",
    "PixelEncoderConfig",
    "ScalarHead",
    "Transition",
    "make_config",
    "make_policy_fns",
    "params_on_cpu",
]
