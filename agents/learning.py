"""The MPO learner step: `(state, batch) -> (state, metrics)`, pure.

`make_update_step` builds the step for a config; `agents.learner.Learner` jits it
(the one jit boundary) and shards it over devices. An update whose loss or gradients
hold a NaN or an infinity is not applied: the step returns its input state and says so
in the metrics (`nonfinite_updates`); `launch.faults.nonfinite` counts these and ends a run
that keeps making them.
"""

from typing import Callable, Dict, Optional, Sequence, Tuple

import chex
import jax
import jax.numpy as jnp
import optax

from agents import mpo_losses
from agents.augmentation import random_shift
from agents.config import MPOConfig, PixelEncoderConfig
from agents.critic_heads import make_critic_head
from agents.distributions import DiagonalGaussian, gaussian_sample
from agents.networks import Critic, GaussianPolicy, PixelEncoder, Trunk, softplus_inverse
from agents.types import DualParams, LearnerState, Transition

# Floor of the duals' softplus pre-activations: the multipliers stay >= ~1.5e-8.
_MIN_DUAL_RAW = -18.0
_DUAL_EPSILON = 1e-8

Metrics = Dict[str, chex.Array]


class Networks:
    """The flax modules and the critic head of one config, and how the learner and the actors apply them.

    State observations (a float32 vector) go straight into the policy and the critic, whose
    params are those modules' own. Frame stacks (uint8 [S, H, W, 3]) go through a
    `PixelEncoder` and then each network's own `Trunk`: the critic's params are
    {"encoder", "trunk", "critic"} and the policy's {"trunk", "policy"}, or, with
    `PixelEncoderConfig.shared` off, {"encoder", "trunk", "policy"} (an encoder of its own).
    """

    def __init__(self, config: MPOConfig, action_dim: int, observation_shape: Optional[Sequence[int]] = None):
        self.head = make_critic_head(config.critic_head)
        self.policy = GaussianPolicy(
            action_dim=action_dim,
            layer_sizes=config.policy_layer_sizes,
            init_scale=config.policy_init_scale,
            min_scale=config.policy_min_scale,
        )
        self.critic = Critic(
            output_size=self.head.output_size, layer_sizes=config.critic_layer_sizes, head_init=self.head.kernel_init
        )
        self.pixels = observation_shape is not None and len(observation_shape) == 4
        encoder = config.pixel_encoder
        if self.pixels:
            _check_frames_fit(encoder, observation_shape)
        self.encoder = PixelEncoder(encoder.channels, encoder.strides, encoder.kernel_size) if self.pixels else None
        self.trunk = Trunk(encoder.features) if self.pixels else None
        self.policy_has_own_encoder = self.pixels and not encoder.shared
        # DrQ's random shift of both observations in the learner step (pixels only; 0 = off).
        self.random_shift_pad = encoder.random_shift_pad if self.pixels else 0

    def init_params(self, policy_key: chex.PRNGKey, critic_key: chex.PRNGKey, observation: chex.Array,
                    action: chex.Array) -> Tuple[chex.ArrayTree, chex.ArrayTree]:
        """(policy params, critic params) for example inputs observation [1, ...], action [1, A]."""
        if not self.pixels:
            return self.policy.init(policy_key, observation), self.critic.init(critic_key, observation, action)
        critic_key, encoder_key, critic_trunk_key = jax.random.split(critic_key, 3)
        policy_key, policy_encoder_key, policy_trunk_key = jax.random.split(policy_key, 3)
        encoder_params = self.encoder.init(encoder_key, observation)
        encoded = self.encoder.apply(encoder_params, observation)
        critic_trunk = self.trunk.init(critic_trunk_key, encoded)
        policy_trunk = self.trunk.init(policy_trunk_key, encoded)
        features = self.trunk.apply(critic_trunk, encoded)
        critic_params = {"encoder": encoder_params, "trunk": critic_trunk,
                         "critic": self.critic.init(critic_key, features, action)}
        policy_params = {"trunk": policy_trunk, "policy": self.policy.init(policy_key, features)}
        if self.policy_has_own_encoder:
            policy_params["encoder"] = self.encoder.init(policy_encoder_key, observation)
        return policy_params, critic_params

    def encode(self, critic_params, observations: chex.Array) -> chex.Array:
        """The critic's encoder's features of frame stacks [B, S, H, W, 3] -> [B, E]; state observations as they are."""
        if not self.pixels:
            return observations
        return self.encoder.apply(critic_params["encoder"], observations)

    def critic_features(self, critic_params, encoded: chex.Array) -> chex.Array:
        """What the critic's torso takes, from `encode`'s output: its trunk's features for pixels."""
        if not self.pixels:
            return encoded
        return self.trunk.apply(critic_params["trunk"], encoded)

    def critic_values(self, critic_params, features: chex.Array, actions: chex.Array) -> chex.Array:
        """The head outputs [..., o] at `critic_features` [..., F] and actions [..., A]."""
        if not self.pixels:
            return self.critic.apply(critic_params, features, actions)
        return self.critic.apply(critic_params["critic"], features, actions)

    def policy_inputs(self, encoded: chex.Array, observations: chex.Array) -> chex.Array:
        """What `policy_distribution` takes: the observations, or (shared encoder) the critic's
        encoding of them (`encode`) with the gradient stopped."""
        if not self.pixels or self.policy_has_own_encoder:
            return observations
        return jax.lax.stop_gradient(encoded)

    def policy_distribution(self, policy_params, inputs: chex.Array) -> DiagonalGaussian:
        if not self.pixels:
            return self.policy.apply(policy_params, inputs)
        if self.policy_has_own_encoder:
            inputs = self.encoder.apply(policy_params["encoder"], inputs)
        return self.policy.apply(policy_params["policy"], self.trunk.apply(policy_params["trunk"], inputs))

    def acting_params(self, policy_params, critic_params):
        """The params actors and evaluators act with (`act`): the policy's, plus the encoder's for pixels."""
        if not self.pixels or self.policy_has_own_encoder:
            return policy_params
        return {"encoder": critic_params["encoder"], **policy_params}

    def act(self, acting_params, observations: chex.Array) -> DiagonalGaussian:
        """The policy at observations [..., O] (float32) or [..., S, H, W, 3] (uint8)."""
        if not self.pixels:
            return self.policy.apply(acting_params, jnp.asarray(observations, jnp.float32))
        encoded = self.encoder.apply(acting_params["encoder"], jnp.asarray(observations))
        return self.policy.apply(acting_params["policy"], self.trunk.apply(acting_params["trunk"], encoded))


def _check_frames_fit(encoder: PixelEncoderConfig, observation_shape: Sequence[int]) -> None:
    """Raises if the encoder's unpadded convolutions would shrink the frames to nothing."""
    height, width = observation_shape[1:3]
    smallest = 1
    for stride in reversed(encoder.strides):  # the input size each layer needs for one output pixel
        smallest = (smallest - 1) * stride + encoder.kernel_size
    if min(height, width) < smallest:
        raise ValueError(f"Frames of {height}x{width} pixels are too small for the pixel encoder "
                         f"(kernel {encoder.kernel_size}, strides {tuple(encoder.strides)}): it needs at least "
                         f"{smallest}x{smallest}. Render larger frames (environment.pixels) or use fewer layers "
                         "(learner.pixel_encoder.strides).")


def _optimizer(learning_rate: float, grad_norm_clip: float) -> optax.GradientTransformation:
    # Flattened: one vector op per optimizer stage instead of one per parameter leaf,
    # which on XLA:CPU saves ~100 small kernels a step.
    return optax.flatten(optax.chain(optax.clip_by_global_norm(grad_norm_clip), optax.adam(learning_rate)))


def _dual_values(raw: chex.Array) -> chex.Array:
    return jax.nn.softplus(raw) + _DUAL_EPSILON


def _all_finite(tree) -> chex.Array:
    """One bool: no NaN or infinity in any leaf of `tree`."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]))


def _select(keep_new: chex.Array, new: LearnerState, old: LearnerState) -> LearnerState:
    return jax.tree_util.tree_map(lambda a, b: jnp.where(keep_new, a, b), new, old)


def _cond(keep_new: chex.Array, new: LearnerState, old: LearnerState) -> LearnerState:
    return jax.lax.cond(keep_new, lambda: new, lambda: old)


def _choose(keep_new: chex.Array, new: LearnerState, old: LearnerState) -> LearnerState:
    """`new` if keep_new else `old`, with no host sync. XLA:GPU runs a conditional by copying
    its predicate to the host and waiting for it, so there it is a select. XLA:CPU has no such
    wait, and there a conditional (which nothing is fused across) leaves the update's compiled
    code, and so its rounding, exactly as without the choice; a select fused into the update
    can round a finite update differently in the last bit."""
    return jax.lax.platform_dependent(keep_new, new, old, cpu=_cond, default=_select)


def observation_example(observation_shape: Sequence[int]) -> chex.Array:
    """A batch of one zero observation: float32 [1, O] for a state vector, uint8 [1, S, H, W, 3] for frames."""
    dtype = jnp.uint8 if len(observation_shape) == 4 else jnp.float32
    return jnp.zeros((1,) + tuple(observation_shape), dtype)


def init_state(config: MPOConfig, networks: Networks, key: chex.PRNGKey, observation_shape: Sequence[int],
               action_dim: int) -> LearnerState:
    policy_key, critic_key, state_key = jax.random.split(key, 3)
    action = jnp.zeros((1, action_dim), jnp.float32)
    policy_params, critic_params = networks.init_params(policy_key, critic_key, observation_example(observation_shape), action)
    num_objectives = 2 if config.action_penalization else 1
    dual_params = DualParams(
        temperature=jnp.full((num_objectives,), softplus_inverse(config.init_temperature), jnp.float32),
        alpha_mean=jnp.full((action_dim,), softplus_inverse(config.init_alpha_mean), jnp.float32),
        alpha_stddev=jnp.full((action_dim,), softplus_inverse(config.init_alpha_stddev), jnp.float32),
    )
    net_optimizer = _optimizer(config.learning_rate, config.grad_norm_clip)
    dual_optimizer = _optimizer(config.dual_learning_rate, config.grad_norm_clip)
    # Targets start equal to the online networks but in their own buffers: the jitted
    # step donates the state, and one buffer cannot be donated twice.
    copy = lambda tree: jax.tree_util.tree_map(jnp.copy, tree)  # noqa: E731
    return LearnerState(
        policy_params=policy_params,
        target_policy_params=copy(policy_params),
        critic_params=critic_params,
        target_critic_params=copy(critic_params),
        dual_params=dual_params,
        policy_opt_state=net_optimizer.init(policy_params),
        critic_opt_state=net_optimizer.init(critic_params),
        dual_opt_state=dual_optimizer.init(dual_params),
        steps=jnp.zeros((), jnp.int32),
        key=state_key,
    )


def make_update_step(config: MPOConfig, networks: Networks) -> Callable[[LearnerState, Transition], Tuple[LearnerState, Metrics]]:
    head = networks.head
    net_optimizer = _optimizer(config.learning_rate, config.grad_norm_clip)
    dual_optimizer = _optimizer(config.dual_learning_rate, config.grad_norm_clip)
    epsilons = jnp.array([config.epsilon, config.epsilon_penalty][: 2 if config.action_penalization else 1])

    def policy_loss(policy_params, dual_params: DualParams, states, target_distribution, sampled_actions, q_values):
        """Policy and dual losses at `states` (`Networks.policy_inputs`) with N sampled actions [N, B, A]
        valued q_values [N, B]."""
        temperatures = _dual_values(dual_params.temperature)
        objectives = [q_values]
        if config.action_penalization:
            objectives.append(mpo_losses.action_penalty(sampled_actions))
        objectives = [jax.lax.stop_gradient(objective) for objective in objectives]
        objective_weights = [
            jax.lax.stop_gradient(mpo_losses.e_step_weights(objective, temperature))
            for objective, temperature in zip(objectives, temperatures)
        ]
        weights = sum(objective_weights)  # MO-MPO: the M-step fits every objective's q
        temperature_loss = sum(
            mpo_losses.temperature_dual_loss(objective, temperature, epsilon)
            for objective, temperature, epsilon in zip(objectives, temperatures, epsilons)
        )

        online_distribution = networks.policy_distribution(policy_params, states)
        loss_mean, loss_stddev, kl_mean, kl_stddev = mpo_losses.decoupled_m_step(
            online_distribution, target_distribution, sampled_actions, weights
        )
        alpha_mean = _dual_values(dual_params.alpha_mean)
        alpha_stddev = _dual_values(dual_params.alpha_stddev)
        kl_loss_mean, alpha_loss_mean = mpo_losses.kl_constraint_losses(kl_mean, alpha_mean, config.epsilon_mean)
        kl_loss_stddev, alpha_loss_stddev = mpo_losses.kl_constraint_losses(kl_stddev, alpha_stddev, config.epsilon_stddev)
        loss = (loss_mean + loss_stddev + kl_loss_mean + kl_loss_stddev
                + alpha_loss_mean + alpha_loss_stddev + temperature_loss)
        metrics = {
            "policy_loss": loss_mean + loss_stddev,
            "temperature": temperatures[0],
            "kl_q_uniform": mpo_losses.kl_to_uniform(objective_weights[0]),
            "kl_mean": jnp.mean(kl_mean),
            "kl_stddev": jnp.mean(kl_stddev),
            "alpha_mean": jnp.mean(alpha_mean),
            "alpha_stddev": jnp.mean(alpha_stddev),
            "policy_stddev": jnp.mean(online_distribution.stddev),
        }
        return loss, metrics

    def update_step(state: LearnerState, batch: Transition) -> Tuple[LearnerState, Metrics]:
        key, next_key, current_key, critic_key = jax.random.split(state.key, 4)
        num_samples = config.num_samples
        observation, next_observation = batch.observation, batch.next_observation
        if networks.random_shift_pad:  # pixels: uint8 [B, S, H, W, 3], each image shifted on its own
            key, shift_key, next_shift_key = jax.random.split(key, 3)
            observation = random_shift(observation, shift_key, networks.random_shift_pad)
            next_observation = random_shift(next_observation, next_shift_key, networks.random_shift_pad)

        # Bootstrap: the target critic at the next observations, N target-policy actions.
        next_encoded = networks.encode(state.target_critic_params, next_observation)  # pixels: [B, E]
        next_policy_inputs = networks.policy_inputs(next_encoded, next_observation)
        next_distribution = networks.policy_distribution(state.target_policy_params, next_policy_inputs)
        next_actions = gaussian_sample(next_distribution, next_key, num_samples)  # [N, B, A]
        next_features = networks.critic_features(state.target_critic_params, next_encoded)  # [B, F]
        tiled_next = jnp.broadcast_to(next_features, (num_samples,) + next_features.shape)
        next_outputs = networks.critic_values(state.target_critic_params, tiled_next, next_actions)  # [N, B, o]

        def critic_loss(critic_params):
            features = networks.critic_features(critic_params, networks.encode(critic_params, observation))
            online = networks.critic_values(critic_params, features, batch.action)  # [B, o]
            return head.loss(online, next_outputs, batch.reward, batch.discount, critic_key)

        (critic_loss_value, critic_metrics), critic_grads = jax.value_and_grad(critic_loss, has_aux=True)(state.critic_params)

        if config.policy_states == "next":
            states, target_distribution, sampled_actions = next_policy_inputs, next_distribution, next_actions
            q_values = head.expected_q(next_outputs)  # [N, B]
        else:
            encoded = networks.encode(state.target_critic_params, observation)
            states = networks.policy_inputs(encoded, observation)
            target_distribution = networks.policy_distribution(state.target_policy_params, states)
            sampled_actions = gaussian_sample(target_distribution, current_key, num_samples)
            features = networks.critic_features(state.target_critic_params, encoded)
            tiled = jnp.broadcast_to(features, (num_samples,) + features.shape)
            q_values = head.expected_q(networks.critic_values(state.target_critic_params, tiled, sampled_actions))

        (_, policy_metrics), (policy_grads, dual_grads) = jax.value_and_grad(policy_loss, argnums=(0, 1), has_aux=True)(
            state.policy_params, state.dual_params, states, target_distribution, sampled_actions, q_values
        )

        critic_updates, critic_opt_state = net_optimizer.update(critic_grads, state.critic_opt_state)
        critic_params = optax.apply_updates(state.critic_params, critic_updates)
        policy_updates, policy_opt_state = net_optimizer.update(policy_grads, state.policy_opt_state)
        policy_params = optax.apply_updates(state.policy_params, policy_updates)
        dual_updates, dual_opt_state = dual_optimizer.update(dual_grads, state.dual_opt_state)
        dual_params = jax.tree_util.tree_map(
            lambda raw: jnp.maximum(raw, _MIN_DUAL_RAW), optax.apply_updates(state.dual_params, dual_updates)
        )

        steps = state.steps + 1
        if config.target_update_rate is None:
            target_policy_params = optax.periodic_update(policy_params, state.target_policy_params, steps, config.target_update_period)
            target_critic_params = optax.periodic_update(critic_params, state.target_critic_params, steps, config.target_update_period)
        else:
            target_policy_params = optax.incremental_update(policy_params, state.target_policy_params, config.target_update_rate)
            target_critic_params = optax.incremental_update(critic_params, state.target_critic_params, config.target_update_rate)

        new_state = LearnerState(
            policy_params=policy_params,
            target_policy_params=target_policy_params,
            critic_params=critic_params,
            target_critic_params=target_critic_params,
            dual_params=dual_params,
            policy_opt_state=policy_opt_state,
            critic_opt_state=critic_opt_state,
            dual_opt_state=dual_opt_state,
            steps=steps,
            key=key,
        )
        # A NaN or inf in a loss or a gradient leaves the state as it was. Such a gradient always
        # reaches the updated state: clip_by_global_norm turns a non-finite norm into NaN updates,
        # and Adam's moments carry them; a NaN or inf loss gives NaN or inf gradients (a loss
        # term that did not would move the state by finite amounts only). So the test is on the
        # updated state, which also refuses a state that came out non-finite any other way. A
        # flag from the losses or gradients themselves is known earlier in the step; XLA then
        # fuses the update's code differently, and on XLA:CPU (which contracts a*b+c to an FMA
        # within a fusion) some configurations' finite updates round differently in the last bit.
        # From the state, a finite update is bitwise the unguarded one (checked against the
        # unguarded step for mpo/dmpo/mog, periodic and Polyak targets, update and update_many).
        # The state is replicated: under data parallelism every device decides alike.
        finite = _all_finite(new_state)
        new_state = _choose(finite, new_state, state)
        metrics = {
            "critic_loss": critic_loss_value, **critic_metrics, **policy_metrics,
            # Before clipping at grad_norm_clip: how often (and how hard) clipping bites.
            "critic_grad_norm": optax.global_norm(critic_grads),
            "policy_grad_norm": optax.global_norm(policy_grads),
            # 1.0 when this update was not applied (a NaN or inf in a loss or a gradient).
            "nonfinite_updates": 1.0 - finite.astype(jnp.float32),
        }
        return new_state, metrics

    return update_step


def make_multi_step(update_step):
    """k updates in one call over a stacked batch [k, B, ...]; metrics are the k-step means,
    but `nonfinite_updates` is the sum: how many of the k were skipped (each update is
    guarded on its own; a skipped one's NaN losses make those means NaN), and
    `nonfinite_each` [k] says which, in order (a run's "K in a row" counts across calls)."""

    def multi_step(state: LearnerState, batches: Transition) -> Tuple[LearnerState, Metrics]:
        state, metrics = jax.lax.scan(update_step, state, batches)
        reduced = {name: (jnp.sum if name == "nonfinite_updates" else jnp.mean)(m, axis=0) for name, m in metrics.items()}
        return state, {**reduced, "nonfinite_each": metrics["nonfinite_updates"]}

    return multi_step
