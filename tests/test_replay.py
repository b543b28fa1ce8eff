"""Replay on a real Reverb server: what actors insert is what the learner gets, in numbers."""

import time

import dm_env
import jax
import numpy as np
import pytest
import reverb

from acme import specs

import environments
import replay
from replay import ReplayConfig

GAMMA, N_STEP, EPISODE = 0.9, 3, 12
CARTPOLE = replay.TransitionLayout(observation_dim=5, action_dim=1)


@pytest.fixture
def episode_in_replay():
    """One 12-step cartpole episode written by the actors' n-step writer into a live table."""
    env = environments.make_environment(
        environments.EnvironmentConfig("cartpole:swingup", seed=3, max_episode_steps=EPISODE)
    )
    # A rate limiter with ample slack both ways: the episode is inserted before any
    # sampling, which Acme's ratio of 32 would (rightly) block after a few inserts.
    config = ReplayConfig(
        min_size_to_sample=1, samples_per_insert=1.0, samples_per_insert_tolerance_rate=1000.0,
        batch_size=8, n_step=N_STEP, discount=GAMMA, max_size=1000,
    )
    server = reverb.Server(tables=[replay.make_online_table(config, env.environment_spec)], port=None)
    address = f"localhost:{server.port}"
    client = reverb.Client(address)
    writer = replay.make_writer(client, config, replay.ONLINE_TABLE)
    rng = np.random.default_rng(0)
    timestep = env.reset()
    timesteps, actions = [timestep], []
    writer.add_first(timestep)
    while not timestep.last():
        action = rng.uniform(-1, 1, (1,)).astype(np.float32)
        timestep = env.step(action)
        writer.add(action, timestep)
        timesteps.append(timestep)
        actions.append(action)
    writer.flush()
    writer.close()
    yield config, address, client, timesteps, actions
    server.stop()


def expected_item(timesteps, actions, t, k):
    """The k-step transition starting at s_t, worked out from the recorded episode."""
    rewards = [float(timesteps[t + 1 + i].reward) for i in range(k)]
    discounted_return = sum(GAMMA**i * r for i, r in enumerate(rewards))
    # Episodes end by truncation here (discount 1), so the bootstrap factor is γ^k.
    return actions[t], discounted_return, GAMMA**k, timesteps[t + k].observation


def test_table_holds_one_transition_per_step(episode_in_replay):
    _, _, client, _, _ = episode_in_replay
    assert client.server_info()[replay.ONLINE_TABLE].current_size == EPISODE


def test_sampled_batches_are_the_n_step_transitions(episode_in_replay):
    config, address, _, timesteps, actions = episode_in_replay
    observations = [ts.observation for ts in timesteps]
    batches = replay.transitions(replay.make_dataset(address, config, CARTPOLE))
    seen = set()
    for _ in range(30):
        batch = next(batches)
        assert batch.observation.shape == (8, 5) and batch.action.shape == (8, 1)
        assert batch.reward.shape == (8,) and batch.discount.dtype == np.float32
        for i in range(8):
            t = next(j for j, o in enumerate(observations) if np.array_equal(o, batch.observation[i]))
            k = next(j for j, o in enumerate(observations) if np.array_equal(o, batch.next_observation[i])) - t
            # n steps, fewer only at the episode's end.
            assert k == min(N_STEP, EPISODE - t)
            action, discounted_return, bootstrap, next_observation = expected_item(timesteps, actions, t, k)
            np.testing.assert_array_equal(batch.action[i], action)
            assert batch.reward[i] == pytest.approx(discounted_return, rel=1e-5)
            assert batch.discount[i] == pytest.approx(bootstrap, rel=1e-6)
            np.testing.assert_array_equal(batch.next_observation[i], next_observation)
            seen.add((t, k))
    # Uniform sampling: 240 draws from 12 items miss one with probability ~5e-5;
    # so every item, the shorter ones at the episode's end included, is seen.
    assert len(seen) == EPISODE


def test_device_prefetcher_delivers_batches_on_device(episode_in_replay):
    config, address, _, _, _ = episode_in_replay
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    prefetcher = replay.DevicePrefetcher(replay.transitions(replay.make_dataset(address, config, CARTPOLE)), sharding, size=2)
    batch = prefetcher.next(timeout=30.0)
    assert batch is not None and isinstance(batch.observation, jax.Array)
    assert batch.observation.shape == (8, 5)
    prefetcher.close()


def test_sampling_waits_for_min_size():
    env = environments.make_environment(environments.EnvironmentConfig("cartpole:swingup", max_episode_steps=5))
    config = ReplayConfig(min_size_to_sample=50, samples_per_insert_tolerance_rate=1000.0, batch_size=4, n_step=2, max_size=1000)
    server = reverb.Server(tables=[replay.make_online_table(config, env.environment_spec)], port=None)
    address = f"localhost:{server.port}"
    writer = replay.make_writer(reverb.Client(address), config, replay.ONLINE_TABLE)
    timestep = env.reset()
    writer.add_first(timestep)
    while not timestep.last():
        timestep = env.step(np.zeros(1, np.float32))
        writer.add(np.zeros(1, np.float32), timestep)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    prefetcher = replay.DevicePrefetcher(replay.transitions(replay.make_dataset(address, config, CARTPOLE)), sharding)
    assert prefetcher.next(timeout=2.0) is None  # 5 items < 50: the rate limiter holds the learner
    prefetcher.close()
    server.stop()


def test_a_transition_packs_into_one_vector_and_back():
    layout = replay.TransitionLayout.of(environments.make_environment(
        environments.EnvironmentConfig("walker:walk")).environment_spec)
    assert (layout.observation_dim, layout.action_dim, layout.size) == (24, 6, 56)
    observation, action = np.arange(24, dtype=np.float32), -np.arange(6, dtype=np.float32)
    packed = layout.pack(observation, action, 2.5, 0.25, observation + 100)
    assert packed.dtype == np.float32 and packed.shape == (56,)
    fields = layout.unpack(np.stack([packed, packed]))  # batched
    np.testing.assert_array_equal(fields["observation"][1], observation)
    np.testing.assert_array_equal(fields["action"][0], action)
    np.testing.assert_array_equal(fields["reward"], [2.5, 2.5])
    np.testing.assert_array_equal(fields["discount"], [0.25, 0.25])
    np.testing.assert_array_equal(fields["next_observation"][0], observation + 100)


def test_invalid_replay_config_names_the_field():
    with pytest.raises(ValueError, match="ReplayConfig.min_size_to_sample"):
        ReplayConfig(min_size_to_sample=0)
    with pytest.raises(ValueError, match="ReplayConfig.discount"):
        ReplayConfig(discount=1.5)


def test_without_a_ratio_actors_insert_freely_and_sampling_waits_for_min_size():
    """samples_per_insert=None (benchmarks, data collection): no sample-to-insert ratio."""
    env = environments.make_environment(environments.EnvironmentConfig("cartpole:swingup", seed=0, max_episode_steps=400))
    config = ReplayConfig(min_size_to_sample=300, samples_per_insert=None, batch_size=8, n_step=1, max_size=10_000)
    server = reverb.Server(tables=[replay.make_online_table(config, env.environment_spec)], port=None)
    client = reverb.Client(f"localhost:{server.port}")
    writer = replay.make_writer(client, config, replay.ONLINE_TABLE)
    timestep = env.reset()
    writer.add_first(timestep)
    for step in range(400):
        if step == 200:  # below min size: no batch yet
            dataset = replay.make_dataset(f"localhost:{server.port}", config, CARTPOLE)
            prefetcher = replay.DevicePrefetcher(replay.transitions(dataset), jax.devices()[0], size=1)
            assert prefetcher.next(timeout=1.0) is None
        timestep = env.step(np.zeros((1,), np.float32))
        writer.add(np.zeros((1,), np.float32), timestep)
    writer.flush()
    writer.close()
    # 400 inserts, never a sample: a ratio limiter would have blocked after its error buffer.
    assert client.server_info()[replay.ONLINE_TABLE].current_size == 400
    assert prefetcher.next(timeout=10.0).observation.shape == (8, 5)
    prefetcher.close()
    server.stop()


def scalar_table(n_step: int, discount: float):
    """A live table for a task with one-number observations and actions (no rate limiter)."""
    spec = specs.EnvironmentSpec(
        observations=specs.Array((1,), np.float32), actions=specs.BoundedArray((1,), np.float32, -1.0, 1.0),
        rewards=specs.Array((), np.float32), discounts=specs.BoundedArray((), np.float32, 0.0, 1.0))
    config = ReplayConfig(min_size_to_sample=1, samples_per_insert=None, batch_size=4, n_step=n_step, discount=discount)
    server = reverb.Server(tables=[replay.make_online_table(config, spec)], port=None)
    return config, spec, server, reverb.Client(f"localhost:{server.port}")


def sampled_items(server, config, spec, batches: int) -> dict:
    """action -> (reward, discount, next observation) of every item seen in `batches` sampled batches."""
    items = {}
    transitions = replay.transitions(replay.make_dataset(f"localhost:{server.port}", config, replay.TransitionLayout.of(spec)))
    for _ in range(batches):
        batch = next(transitions)
        for action, reward, discount, next_observation in zip(batch.action, batch.reward, batch.discount,
                                                              batch.next_observation):
            items[int(action[0])] = (float(reward), float(discount), float(next_observation[0]))
    return items


def test_n_step_return_and_bootstrap_stop_at_a_terminal_step():
    """Rewards 1, 2, 3, 4, the last step terminal (discount 0); n = 2, γ = 0.5, worked by hand."""
    config, spec, server, client = scalar_table(n_step=2, discount=0.5)
    writer = replay.make_writer(client, config, replay.ONLINE_TABLE)
    observation = lambda t: np.array([10.0 * t], np.float32)  # noqa: E731
    writer.add_first(dm_env.restart(observation(0)))
    for t, reward in enumerate([1.0, 2.0, 3.0]):
        writer.add(np.array([t], np.float32), dm_env.transition(np.float32(reward), observation(t + 1)))
    writer.add(np.array([3], np.float32), dm_env.termination(np.float32(4.0), observation(4)))
    writer.flush()
    writer.close()
    items = sampled_items(server, config, spec, batches=50)  # 200 uniform draws of 4 items: each is seen
    assert items == {
        0: (1 + 0.5 * 2, 0.25, 20.0),      # r0 + γ r1, γ^2, s2
        1: (2 + 0.5 * 3, 0.25, 30.0),
        2: (3 + 0.5 * 4, 0.0, 40.0),       # the bootstrap dies with the terminal step
        3: (4.0, 0.0, 40.0),               # one step left: k = 1
    }
    server.stop()


def test_one_writer_keeps_the_episodes_of_several_environments_apart():
    """An actor stepping two environments in turn: env 0 ends terminal after rewards 1-4, env 1 is
    truncated after rewards 10, 20, 30 (discount 1). n = 2, γ = 0.5; items worked by hand."""
    config, spec, server, client = scalar_table(n_step=2, discount=0.5)
    writer = replay.make_writer(client, config, replay.ONLINE_TABLE, num_envs=2)
    observation = lambda env, t: np.array([1000.0 * env + 10.0 * t], np.float32)  # noqa: E731
    rewards = {0: [1.0, 2.0, 3.0, 4.0], 1: [10.0, 20.0, 30.0]}
    for env in (0, 1):
        writer.add_first(dm_env.restart(observation(env, 0)), env)
    for t in range(4):
        for env in (0, 1):
            if t >= len(rewards[env]):
                continue
            last = t == len(rewards[env]) - 1
            reward, next_observation = np.float32(rewards[env][t]), observation(env, t + 1)
            timestep = (dm_env.transition(reward, next_observation) if not last else
                        dm_env.termination(reward, next_observation) if env == 0 else
                        dm_env.truncation(reward, next_observation))
            writer.add(np.array([100 * env + t], np.float32), timestep, env)
    with pytest.raises(ValueError, match="environment 1's first observation is missing"):
        writer.add(np.zeros((1,), np.float32), dm_env.transition(np.float32(0.0), observation(1, 9)), 1)
    writer.flush()
    writer.close()
    assert client.server_info()[replay.ONLINE_TABLE].current_size == 7
    items = sampled_items(server, config, spec, batches=60)  # 240 uniform draws of 7 items: each is seen
    assert items == {
        0: (1 + 0.5 * 2, 0.25, 20.0),
        1: (2 + 0.5 * 3, 0.25, 30.0),
        2: (3 + 0.5 * 4, 0.0, 40.0),          # env 0's terminal step ends its bootstrap
        3: (4.0, 0.0, 40.0),
        100: (10 + 0.5 * 20, 0.25, 1020.0),
        101: (20 + 0.5 * 30, 0.25, 1030.0),
        102: (30.0, 0.5, 1030.0),             # truncated: bootstraps from env 1's own last state
    }
    server.stop()


def test_asking_a_server_that_does_not_answer_for_its_signature_times_out():
    """The learner asks with a timeout and again until the program stops: a server gone (stopping)
    or not back yet (restarting) must not hold it forever."""
    from launch.runtime.ports import reserve_port

    port = reserve_port()  # reserved for this process, and nothing listens there
    started = time.monotonic()
    with pytest.raises(reverb.errors.DeadlineExceededError):
        replay.make_dataset(f"localhost:{port}", replay.ReplayConfig(), CARTPOLE, signature_timeout_s=1)
    assert time.monotonic() - started < 30
