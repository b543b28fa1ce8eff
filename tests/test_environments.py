"""Relay's dm_control environments, checked against raw dm_control on real tasks."""

import dataclasses

import dm_env
import numpy as np
import pytest
from acme import specs

import environments
from environments import EnvironmentConfig, PixelConfig


def make(task="walker:walk", **kwargs):
    return environments.make_environment(EnvironmentConfig(task, **kwargs))


def raw_flat(observation):
    """The flat vector Relay promises: entries in sorted key order, float32."""
    return np.concatenate([np.ravel(observation[key]) for key in sorted(observation)]).astype(np.float32)


def test_walker_specs_and_dtypes():
    env = make("walker:walk")
    spec = env.environment_spec
    assert isinstance(spec, specs.EnvironmentSpec)
    assert spec.observations.shape == (24,) and spec.observations.dtype == np.float32
    assert spec.actions.shape == (6,) and spec.actions.dtype == np.float32
    np.testing.assert_array_equal(spec.actions.minimum, -1.0)
    np.testing.assert_array_equal(spec.actions.maximum, 1.0)
    assert spec.rewards.dtype == np.float32 and spec.discounts.dtype == np.float32

    first = env.reset()
    assert first.step_type == dm_env.StepType.FIRST and first.reward is None and first.discount is None
    spec.observations.validate(first.observation)
    step = env.step(np.zeros(6, np.float32))
    assert step.step_type == dm_env.StepType.MID
    spec.observations.validate(step.observation)
    assert isinstance(step.reward, np.float32) and isinstance(step.discount, np.float32)
    assert step.discount == 1.0


def test_observation_is_raw_observation_in_sorted_key_order():
    env = make("walker:walk", seed=3)
    raw = environments.load_task("walker:walk", seed=3)
    np.testing.assert_array_equal(env.reset().observation, raw_flat(raw.reset().observation))
    action = np.linspace(-0.9, 0.9, 6).astype(np.float32)
    for _ in range(5):
        ours, theirs = env.step(action), raw.step(action.astype(np.float64))
        np.testing.assert_array_equal(ours.observation, raw_flat(theirs.observation))
        assert ours.reward == np.float32(theirs.reward)
    assert env.observation_layout == {
        "height": slice(0, 1), "orientations": slice(1, 15), "velocity": slice(15, 24)
    }


def test_multi_dimensional_observations_are_flattened_in_c_order():
    flatten = environments.ObservationFlattener(
        {"b": dm_env.specs.Array((2, 3), np.float64), "a": dm_env.specs.Array((), np.float64)}
    )
    flat = flatten({"b": np.arange(6.0).reshape(2, 3), "a": np.float64(-1.0)})
    np.testing.assert_array_equal(flat, [-1, 0, 1, 2, 3, 4, 5])
    assert flat.dtype == np.float32 and flatten.spec.shape == (7,)


def test_rescaling_is_exact_at_the_edges_of_non_unit_bounds():
    env = make("quadruped:walk")
    task_spec = environments.load_task("quadruped:walk", seed=0).action_spec()
    assert not np.all(task_spec.maximum == 1.0)  # the case worth testing
    rescale = environments.ActionRescaler(task_spec)
    ones = np.ones(task_spec.shape, np.float32)
    np.testing.assert_array_equal(rescale(ones), task_spec.maximum)
    np.testing.assert_array_equal(rescale(-ones), task_spec.minimum)
    np.testing.assert_allclose(rescale(0 * ones), (task_spec.minimum + task_spec.maximum) / 2, atol=1e-12)
    # Beyond [-1, 1] is clipped, not extrapolated.
    np.testing.assert_array_equal(rescale(3 * ones), task_spec.maximum)
    np.testing.assert_array_equal(rescale(-3 * ones), task_spec.minimum)

    # And the physics receives exactly that control.
    env.reset()
    env.step(ones)
    np.testing.assert_array_equal(env.physics.data.ctrl, task_spec.maximum)
    env.step(-ones)
    np.testing.assert_array_equal(env.physics.data.ctrl, task_spec.minimum)


def test_actions_outside_unit_box_are_clipped_for_unit_bound_tasks():
    env = make("cartpole:swingup")
    env.reset()
    env.step(np.array([7.5], np.float32))
    np.testing.assert_array_equal(env.physics.data.ctrl, [1.0])
    env.step(np.array([-0.25], np.float32))
    np.testing.assert_array_equal(env.physics.data.ctrl, [-0.25])


def rollout(env, actions):
    steps = [env.reset()]
    for action in actions:
        steps.append(env.step(action))
    return steps


def test_same_seed_same_episode_other_seed_other_episode():
    actions = np.random.default_rng(0).uniform(-1, 1, (50, 6)).astype(np.float32)
    first, second = rollout(make(seed=7), actions), rollout(make(seed=7), actions)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.observation, b.observation)
        assert a.reward == b.reward
    other = rollout(make(seed=8), actions)
    assert not np.array_equal(first[0].observation, other[0].observation)


def test_max_episode_steps_truncates_with_discount_one_then_restarts():
    env = make("walker:walk", max_episode_steps=7)
    env.reset()
    action = np.zeros(6, np.float32)
    types = [env.step(action).step_type for _ in range(7)]
    assert types == [dm_env.StepType.MID] * 6 + [dm_env.StepType.LAST]
    last = env.step  # the next call starts a new episode
    assert last(action).step_type == dm_env.StepType.FIRST


def test_truncation_discount_and_episode_longer_than_task_limit():
    env = make("cartpole:balance", max_episode_steps=1200)  # the task alone stops at 1000
    timestep = env.reset()
    count = 0
    while not timestep.last():
        timestep = env.step(np.zeros(1, np.float32))
        count += 1
    assert count == 1200 and timestep.discount == 1.0


def test_default_limit_is_the_tasks_own_divided_by_action_repeat():
    env = make("cartpole:swingup", action_repeat=4)
    timestep, count = env.reset(), 0
    while not timestep.last():
        timestep = env.step(np.zeros(1, np.float32))
        count += 1
    assert count == 1000 // 4 and timestep.discount == 1.0


def test_action_repeat_sums_rewards_and_returns_last_observation():
    env = make("walker:walk", seed=2, action_repeat=3)
    raw = environments.load_task("walker:walk", seed=2)
    env.reset(), raw.reset()
    rng = np.random.default_rng(1)
    for _ in range(4):
        action = rng.uniform(-1, 1, 6).astype(np.float32)
        ours = env.step(action)
        raw_steps = [raw.step(action.astype(np.float64)) for _ in range(3)]
        expected = sum(step.reward for step in raw_steps)
        assert ours.reward == pytest.approx(expected, rel=1e-6)
        assert expected > 0.0  # a sum of real rewards, not of zeros
        np.testing.assert_array_equal(ours.observation, raw_flat(raw_steps[-1].observation))


def test_pixel_observations_are_stacks_of_the_newest_frames():
    env = make("cartpole:swingup", pixels=PixelConfig(height=64, width=48, frame_stack=3), max_episode_steps=30)
    spec = env.observation_spec()
    assert spec.shape == (3, 64, 48, 3) and spec.dtype == np.uint8
    first = env.reset()
    spec.validate(first.observation)
    # A real rendered frame: not one flat colour. At the first step every slot holds it.
    assert first.observation[-1].std() > 5.0
    for slot in range(2):
        np.testing.assert_array_equal(first.observation[slot], first.observation[-1])
    stacks = [first.observation]
    for _ in range(20):
        stacks.append(env.step(np.ones(1, np.float32)).observation)
        # Each step drops the oldest frame and appends the one rendered now.
        np.testing.assert_array_equal(stacks[-1][:-1], stacks[-2][1:])
        np.testing.assert_array_equal(stacks[-1][-1], env.render(64, 48))
    assert not np.array_equal(stacks[0][-1], stacks[-1][-1])
    # Without shadows: the same scene, a different frame (the shadows' pixels).
    shadowless = env.render(64, 48, shadows=False)
    assert shadowless.shape == (64, 48, 3) and not np.array_equal(shadowless, stacks[-1][-1])
    assert np.mean(shadowless != stacks[-1][-1]) < 0.5
    # A new episode starts a new stack.
    while not env.step(np.ones(1, np.float32)).last():
        pass
    again = env.reset().observation
    np.testing.assert_array_equal(again[0], again[-1])
    env.close()  # its rendering context freed here, not by a later garbage collection in another context


def test_pixels_with_state():
    env = make("cartpole:swingup", pixels=PixelConfig(include_state=True))
    timestep = env.reset()
    assert set(timestep.observation) == {"pixels", "state"}
    assert timestep.observation["pixels"].shape == (3, 84, 84, 3)
    assert timestep.observation["pixels"].dtype == np.uint8
    assert timestep.observation["state"].shape == (5,)
    assert env.environment_spec.observations["state"].dtype == np.float32
    env.close()


def test_unknown_task_lists_the_valid_names():
    with pytest.raises(ValueError) as error:
        EnvironmentConfig("walker:fly")
    message = str(error.value)
    assert "'walker:fly'" in message and "walker:walk" in message and "cheetah:run" in message
    with pytest.raises(ValueError, match="domain:task"):
        EnvironmentConfig("walker-walk")
    assert len(environments.task_names()) == 51 and "walker:walk" in environments.task_names()


@pytest.mark.parametrize(
    "field, value",
    [("action_repeat", 0), ("max_episode_steps", 0), ("seed", -1), ("action_repeat", 1.5)],
)
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"EnvironmentConfig.{field}"):
        dataclasses.replace(EnvironmentConfig("walker:walk"), **{field: value})


def test_invalid_pixel_config_names_the_field():
    with pytest.raises(ValueError, match="PixelConfig.height"):
        PixelConfig(height=0)
