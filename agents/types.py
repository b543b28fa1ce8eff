"""The pytrees the learner passes around."""

import chex
import flax.struct
import optax


@flax.struct.dataclass
class Transition:
    """A batch of n-step transitions, leading dimension B.

    `reward` is the discounted n-step return and `discount` the factor on the bootstrap
    value at `next_observation` (γ^n, zero past a terminal state).
    """

    observation: chex.Array  # [B, O]
    action: chex.Array  # [B, A]
    reward: chex.Array  # [B]
    discount: chex.Array  # [B]
    next_observation: chex.Array  # [B, O]


@flax.struct.dataclass
class DualParams:
    """Softplus pre-activations of MPO's Lagrange multipliers."""

    temperature: chex.Array  # [num objectives]: Q, then the action penalty if on
    alpha_mean: chex.Array  # [A]
    alpha_stddev: chex.Array  # [A]


@flax.struct.dataclass
class LearnerState:
    policy_params: chex.ArrayTree
    target_policy_params: chex.ArrayTree
    critic_params: chex.ArrayTree
    target_critic_params: chex.ArrayTree
    dual_params: DualParams
    policy_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    dual_opt_state: optax.OptState
    steps: chex.Array  # int32 scalar: SGD steps taken
    key: chex.PRNGKey
