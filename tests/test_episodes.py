"""The episode runner (launch.loops.episodes), which the evaluator, evaluate, rollout and the
benchmarks share: its returns against a loop written out here, what observers see, the stop,
and bad steps."""

import dataclasses

import numpy as np
import pytest
from dm_control.rl import control

import environments
from launch.loops.episodes import EpisodeRunner, uniform_random_policy
from test_bad_env_input import _inject_faults

CONFIG = environments.EnvironmentConfig("cartpole:swingup", seed=3, max_episode_steps=7)


def policy(observation):
    return np.tanh(observation[:1]).astype(np.float32)  # deterministic, and not constant


class Recorder:
    def __init__(self):
        self.seen = []

    def add_first(self, timestep):
        self.seen.append(("first", None, timestep.observation.copy()))

    def add(self, action, timestep):
        self.seen.append((int(timestep.step_type), action.copy(), timestep.observation.copy()))


def test_two_episodes_give_the_returns_of_the_same_loop_written_out_and_observers_see_every_timestep():
    env = environments.make_environment(CONFIG)
    expected, timesteps = [], []
    for _ in range(2):
        timestep, total = env.reset(), 0.0
        timesteps.append(timestep.observation)
        while not timestep.last():
            timestep = env.step(policy(timestep.observation))
            timesteps.append(timestep.observation)
            total += float(timestep.reward)
        expected.append(total)
    recorder = Recorder()
    played = EpisodeRunner(environments.make_environment(CONFIG), policy, [recorder]).run(2)
    assert [episode.total_return for episode in played] == expected
    assert [(episode.steps, episode.finished, episode.problem) for episode in played] == [(7, True, None)] * 2
    assert [kind for kind, _, _ in recorder.seen] == (["first"] + [1] * 6 + [2]) * 2
    np.testing.assert_array_equal(np.stack([observation for _, _, observation in recorder.seen]), np.stack(timesteps))


def test_a_stop_ends_the_episode_before_the_next_step():
    calls = []
    played = EpisodeRunner(environments.make_environment(CONFIG), policy).run(
        3, should_stop=lambda: calls.append(1) or len(calls) > 4)
    assert [(episode.steps, episode.finished) for episode in played] == [(4, False)]  # and no second episode


@pytest.mark.parametrize("fault, problem", [("observation", "NaN or infinity in observation.velocity"),
                                            ("reward", "NaN or infinity in reward"), ("physics", "PhysicsError")])
def test_a_bad_step_ends_the_episode_and_is_named(fault, problem):
    env = environments.make_environment(CONFIG)
    _inject_faults(env, {3: fault})
    recorder = Recorder()
    played = EpisodeRunner(env, policy, [recorder], check_steps=True).run(2)
    assert len(played) == 1 and played[0].steps == 2 and not played[0].finished
    assert played[0].problem.startswith(problem)
    assert len(recorder.seen) == 3  # the first timestep and two good steps: nothing of the bad one


def test_without_checks_a_crashed_physics_step_raises():
    env = environments.make_environment(CONFIG)
    _inject_faults(env, {2: "physics"})
    with pytest.raises(control.PhysicsError):
        EpisodeRunner(env, policy).run(1)


def test_the_random_policy_stays_in_the_action_bounds_and_is_seeded():
    spec = environments.make_environment(dataclasses.replace(CONFIG, task="walker:walk")).action_spec()
    first, again = uniform_random_policy(spec, 0), uniform_random_policy(spec, 0)
    actions = np.stack([first(None) for _ in range(100)])
    assert actions.shape == (100, 6) and actions.dtype == np.float32
    assert actions.min() >= spec.minimum.min() and actions.max() <= spec.maximum.max() and actions.std() > 0.3
    np.testing.assert_array_equal(actions[0], again(None))
