"""The learner from pixels: the encoder, DrQ's random shift, and the MPO step on uint8 frame stacks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents
from agents.augmentation import random_shift, shift_images
from agents.networks import PixelEncoder

SMALL = dict(policy_layer_sizes=(16, 64), critic_layer_sizes=(16, 64), num_samples=8)


def test_encoder_output_shape_and_its_scaling_of_uint8_frames():
    encoder = PixelEncoder(channels=32, strides=(2, 1, 1, 1))
    frames = np.random.default_rng(0).integers(0, 256, (2, 5, 3, 64, 64, 3), dtype=np.uint8)  # [B1, B2, S, H, W, 3]
    params = encoder.init(jax.random.PRNGKey(0), frames[0])
    features = encoder.apply(params, frames)
    # 64 -> 31 (3x3, stride 2, unpadded) -> 29 -> 27 -> 25; 32 channels.
    assert features.shape == (2, 5, 25 * 25 * 32) and features.dtype == jnp.float32

    # The same features worked out with lax directly: channels are the S frames' RGB, oldest
    # first, pixels scaled to [-0.5, 0.5].
    x = np.concatenate([frames[0, :, s] for s in range(3)], axis=-1).astype(np.float32) / 255.0 - 0.5  # [5, H, W, 9]
    layers = params["params"]
    for index, stride in enumerate((2, 1, 1, 1)):
        conv = layers[f"Conv_{index}"]
        x = jax.lax.conv_general_dilated(x, conv["kernel"], (stride, stride), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC")) + conv["bias"]
        x = jnp.maximum(x, 0.0)
    np.testing.assert_allclose(features[0], np.asarray(x).reshape(5, -1), rtol=1e-4, atol=1e-5)

    # float frames with the uint8 values give the same features: the scaling is on the values.
    np.testing.assert_allclose(encoder.apply(params, frames[0].astype(np.float32)), features[0], rtol=1e-5, atol=1e-6)


def test_a_shift_moves_the_image_by_what_it_says_and_repeats_the_edge():
    pad = 2
    image = np.arange(6 * 7 * 3, dtype=np.uint8).reshape(1, 6, 7, 3)  # [S=1, H, W, C], every pixel its own value
    images = np.stack([image, image, image])
    offsets = np.array([[pad, pad], [0, 4], [3, 1]], np.int32)  # no shift; down 2 right 2 ... see below
    shifted = np.asarray(shift_images(jnp.asarray(images), jnp.asarray(offsets), pad))
    assert shifted.dtype == np.uint8 and shifted.shape == images.shape
    np.testing.assert_array_equal(shifted[0], image)  # offset = pad: no move
    for b, (dy, dx) in enumerate(offsets):
        rows = np.clip(np.arange(6) + dy - pad, 0, 5)
        cols = np.clip(np.arange(7) + dx - pad, 0, 6)
        np.testing.assert_array_equal(shifted[b, 0], image[0][rows][:, cols])
    # Offset (0, 4): the content moves 2 down and 2 left; the top rows repeat row 0.
    np.testing.assert_array_equal(shifted[1, 0, 2:, :5], image[0, :4, 2:])
    np.testing.assert_array_equal(shifted[1, 0, 0], shifted[1, 0, 2])


def test_random_shifts_are_per_image_within_the_pad_and_move_a_stack_together():
    pad = 4
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (64, 3, 20, 20, 3), dtype=np.uint8)
    frames[:, 1] = frames[:, 0]  # two equal frames in each stack must stay equal after the shift
    shifted = np.asarray(random_shift(jnp.asarray(frames), jax.random.PRNGKey(0), pad))
    np.testing.assert_array_equal(shifted[:, 0], shifted[:, 1])
    # Each image's offset, found by trying all of them: exactly one fits each image.
    offsets = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    fits = np.stack([np.all(np.asarray(shift_images(frames, np.tile([offset], (len(frames), 1)), pad)) == shifted,
                            axis=(1, 2, 3, 4)) for offset in offsets], axis=1)  # [B, offsets]
    assert np.all(fits.sum(axis=1) == 1)
    assert len(set(np.argmax(fits, axis=1))) > 20  # independent offsets, not one for the batch


def visual_bandit_batch(rng, batch_size, frame_stack=2, size=16):
    """One-step task seen through frames: bright frames want action +0.5, dark ones -0.5."""
    bright = rng.random(batch_size) < 0.5
    level = np.where(bright, 200, 40)[:, None, None, None, None]
    frames = np.clip(level + rng.integers(-20, 21, (batch_size, frame_stack, size, size, 3)), 0, 255).astype(np.uint8)
    actions = rng.uniform(-1, 1, (batch_size, 1)).astype(np.float32)
    best = np.where(bright, 0.5, -0.5)[:, None].astype(np.float32)
    rewards = (1.0 - np.sum((actions - best) ** 2, axis=-1)).astype(np.float32)
    return agents.Transition(observation=frames, action=actions, reward=rewards,
                             discount=np.zeros(batch_size, np.float32), next_observation=frames)


# The policy's own encoder: the same check, slow (the default run keeps under 30 minutes).
@pytest.mark.parametrize("shared", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_a_policy_learns_from_pixels_what_the_frames_ask_for(shared):
    encoder = agents.PixelEncoderConfig(channels=8, strides=(2, 1, 1, 1), shared=shared, random_shift_pad=2)
    config = agents.make_config("mpo", learning_rate=1e-3, target_update_period=20, init_temperature=1.0,
                                epsilon_mean=0.01, epsilon_stddev=1e-3, init_alpha_stddev=1.0, pixel_encoder=encoder,
                                **SMALL)
    learner = agents.Learner(config, observation_shape=(2, 16, 16, 3), action_dim=1)
    state = learner.init(jax.random.PRNGKey(0))
    networks = learner.networks
    assert set(state.critic_params) == {"encoder", "trunk", "critic"}
    assert set(state.policy_params) == ({"trunk", "policy"} if shared else {"encoder", "trunk", "policy"})
    initial_critic_encoder = jax.device_get(state.critic_params["encoder"])
    rng = np.random.default_rng(0)
    for _ in range(6):
        batches = [visual_bandit_batch(rng, 64) for _ in range(100)]
        state, metrics = learner.update_many(state, jax.tree_util.tree_map(lambda *b: np.stack(b), *batches))
        assert np.isfinite(float(metrics["critic_loss"]))
    # The critic loss trained the critic's encoder.
    moved = jax.tree_util.tree_map(lambda a, b: float(np.max(np.abs(a - b))), initial_critic_encoder,
                                   jax.device_get(state.critic_params["encoder"]))
    assert max(jax.tree_util.tree_leaves(moved)) > 1e-3

    # Actors act on uint8 frame stacks with the acting params: the policy and, when shared, the
    # online critic's encoder (Acme's TF DMPO). One more update leaves the target networks behind.
    state, _ = learner.update(state, visual_bandit_batch(rng, 64))
    acting = networks.acting_params(state.policy_params, state.critic_params)
    _, greedy_action = agents.make_policy_fns(networks)
    test = visual_bandit_batch(np.random.default_rng(1), 200)
    online_inputs = networks.policy_inputs(networks.encode(state.critic_params, test.observation), test.observation)
    target_inputs = networks.policy_inputs(networks.encode(state.target_critic_params, test.observation),
                                           test.observation)
    acted = networks.act(acting, test.observation).mean
    np.testing.assert_allclose(acted, networks.policy_distribution(state.policy_params, online_inputs).mean,
                               rtol=1e-5, atol=1e-6)
    if shared:  # the target encoder gives other features, so the check above tells them apart
        assert np.max(np.abs(acted - networks.policy_distribution(state.policy_params, target_inputs).mean)) > 1e-4
    actions = np.asarray(greedy_action(acting, test.observation))[:, 0]
    bright = test.observation[:, 0, 0, 0, 0] > 120
    # On its way to +-0.5 (its KL bounds move the mean ~0.001 a step): 600 steps gave +-0.35 to 0.38.
    assert np.mean(actions[bright]) > 0.2 and np.mean(actions[~bright]) < -0.2
    assert np.mean(actions[bright]) - np.mean(actions[~bright]) > 0.5


def test_the_policy_sends_no_gradient_into_the_shared_encoder():
    config = agents.make_config("mpo", pixel_encoder=agents.PixelEncoderConfig(channels=4, random_shift_pad=0), **SMALL)
    learner = agents.Learner(config, observation_shape=(1, 16, 16, 3), action_dim=1)
    state = learner.init(jax.random.PRNGKey(0))
    networks = learner.networks
    frames = visual_bandit_batch(np.random.default_rng(0), 16, frame_stack=1).observation

    def policy_mean(critic_params):
        inputs = networks.policy_inputs(networks.encode(critic_params, frames), frames)
        return jnp.sum(networks.policy_distribution(state.policy_params, inputs).mean)

    def critic_value(critic_params):
        features = networks.critic_features(critic_params, networks.encode(critic_params, frames))
        return jnp.sum(networks.critic_values(critic_params, features, jnp.zeros((16, 1))))

    def largest(grads):
        return max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(grads["encoder"]))

    assert largest(jax.grad(policy_mean)(state.critic_params)) == 0.0
    assert largest(jax.grad(critic_value)(state.critic_params)) > 0.0


def test_frames_too_small_for_the_encoder_are_refused_naming_the_size_needed():
    config = agents.make_config("mpo", **SMALL)  # 3x3 kernels, strides 2, 1, 1, 1: 15 pixels at least
    agents.Learner(config, observation_shape=(3, 15, 15, 3), action_dim=1)
    with pytest.raises(ValueError, match="14x15 pixels are too small.*at least 15x15"):
        agents.Learner(config, observation_shape=(3, 14, 15, 3), action_dim=1)
