"""The actor's loop (launch.loops.actor.Actor) against a live Reverb server: what it writes, records and counts."""

import numpy as np
import pytest
import reverb
from acme.utils import counting

import replay
from environments import environment_spec
from experiments import configs
from launch.loops.actor import Actor
from launch.nodes.actor import PolicyServer
from launch.rundir import metrics
from replay import experience

EPISODE, N_STEP, GAMMA = 6, 2, 0.9


@pytest.fixture
def actor_and_server(tmp_path):
    config = configs.make_experiment_config(
        agent="mpo", task="cartpole:swingup", run_dir=str(tmp_path), preset="debug", envs_per_actor=2,
        overrides=[f"environment.max_episode_steps={EPISODE}", f"replay.n_step={N_STEP}", f"replay.discount={GAMMA}",
                   "replay.samples_per_insert=none", "replay.min_size_to_sample=1", "replay.batch_size=8",
                   "experiment.actor_update_period=10"])
    server = reverb.Server([replay.make_online_table(config.replay, environment_spec(config.environment))], port=None)
    client = reverb.Client(f"localhost:{server.port}")
    counter = counting.Counter(prefix="actor")
    log = metrics.MetricsWriter(config.run_dir, "actor_0", step_key="actor_steps")
    actor = Actor(config, 0, client, PolicyServer(config, environment_spec(config.environment)), counter=counter, log=log)
    yield config, server, client, actor, counter
    actor.close()
    log.close()
    server.stop()


def test_the_actor_writes_records_and_counts_every_step_of_every_environment(actor_and_server):
    config, server, client, actor, counter = actor_and_server
    actor.run(4 * EPISODE)  # 2 environments stepped in turn: 2 whole episodes each
    actor.writer.flush()
    assert actor.steps == 4 * EPISODE and len(actor.episode_returns) == 4
    assert client.server_info()[replay.ONLINE_TABLE].current_size == 4 * EPISODE  # one item per step
    actor.flush_counts()
    assert counter.get_counts() == {"actor_steps": 4 * EPISODE, "actor_episodes": 4}
    # Refetched every 10 steps (after steps 12 and 24), never sent again: the version stays 0.
    assert actor.versions_seen == [0, 0, 0] and actor.version == 0

    # Environment k's episode ends at the actor's (steps + k + 1)-th step.
    actor._log.close()
    rows = metrics.read_rows(metrics.csv_path(config.run_dir, "actor_0"))
    assert [(row["env"], row["actor_steps"], row["episode_length"]) for row in rows] == [
        (0, 11, EPISODE), (1, 12, EPISODE), (0, 23, EPISODE), (1, 24, EPISODE)]

    # Each environment's stream on disk holds its own episodes, seeded apart.
    streams = [experience.actor_directories(config.run_dir)[k] for k in range(2)]
    assert [s.rsplit("/", 1)[1] for s in streams] == ["actor_0_env_0", "actor_0_env_1"]
    for recorder in actor._recorders:
        recorder.flush()
    episodes = {k: list(experience.read_episodes(stream)) for k, stream in enumerate(streams)}
    assert not np.allclose(episodes[0][0]["observation"][0], episodes[1][0]["observation"][0])
    returns_by_env = {k: [float(np.sum(e["reward"])) for e in episodes[k]] for k in range(2)}
    assert [row["episode_return"] for row in rows] == pytest.approx(
        [returns_by_env[0][0], returns_by_env[1][0], returns_by_env[0][1], returns_by_env[1][1]], rel=1e-5)

    # Every item in replay is the n-step transition of a recorded step, worked out from the recording.
    recorded = [e for k in range(2) for e in episodes[k]]
    layout = replay.TransitionLayout.of(environment_spec(config.environment))
    batches = replay.transitions(replay.make_dataset(f"localhost:{server.port}", config.replay, layout))
    seen = set()
    for _ in range(40):
        batch = next(batches)
        for i in range(len(batch.reward)):
            e, t = next((e, t) for e, episode in enumerate(recorded) for t in range(EPISODE)
                        if np.array_equal(episode["observation"][t], batch.observation[i]))
            episode, k = recorded[e], min(N_STEP, EPISODE - t)
            np.testing.assert_array_equal(batch.action[i], episode["action"][t])
            assert batch.reward[i] == pytest.approx(sum(GAMMA**j * episode["reward"][t + 1 + j] for j in range(k)),
                                                    rel=1e-5)
            assert batch.discount[i] == pytest.approx(GAMMA**k)  # cut by the time limit, never terminal
            np.testing.assert_array_equal(batch.next_observation[i], episode["observation"][t + k])
            seen.add((e, t))
    assert len(seen) == 4 * EPISODE  # 320 uniform draws of 24 items miss one with probability ~2e-10


def test_run_stops_when_asked_and_counts_what_it_took(actor_and_server):
    _, _, _, actor, counter = actor_and_server
    calls = []
    actor.run(1000, should_stop=lambda: len(calls.append(None) or calls) > 3)
    assert actor.steps == 3 * 2  # three policy calls, two environments each
    actor.flush_counts()
    assert counter.get_counts() == {"actor_steps": 6}


def frame_stack(frames, t, size):
    """The stack the environment shows at step t: frames t-S+1 .. t, the first repeated before it."""
    return np.stack([frames[max(0, t - size + 1 + j)] for j in range(size)])


def test_a_pixel_actor_stores_each_frame_once_and_replay_gives_back_its_stacks(tmp_path):
    stack = 3
    config = configs.make_experiment_config(
        agent="mpo", task="cartpole:swingup", run_dir=str(tmp_path), preset="debug", envs_per_actor=2,
        overrides=[f"environment.max_episode_steps={EPISODE}", f"replay.n_step={N_STEP}", f"replay.discount={GAMMA}",
                   "replay.samples_per_insert=none", "replay.min_size_to_sample=1", "replay.batch_size=8",
                   "pixels.height=24", "pixels.width=32", f"pixels.frame_stack={stack}", "pixels.shadows=false",
                   "encoder.channels=4"])
    spec = environment_spec(config.environment)
    assert spec.observations.shape == (stack, 24, 32, 3)
    server = reverb.Server([replay.make_online_table(config.replay, spec)], port=None)
    client = reverb.Client(f"localhost:{server.port}")
    actor = Actor(config, 0, client, PolicyServer(config, spec))
    try:
        actor.run(4 * EPISODE)
        actor.writer.flush()
        assert client.server_info()[replay.ONLINE_TABLE].current_size == 4 * EPISODE  # one item per step
        for recorder in actor._recorders:
            recorder.flush()
        # The recording holds each timestep's newest frame, uint8, never the stack.
        recorded = [e for stream in experience.actor_directories(config.run_dir)
                    for e in experience.read_episodes(stream)]
        assert len(recorded) == 4 and all(e["observation"].shape == (EPISODE + 1, 24, 32, 3) for e in recorded)
        assert recorded[0]["observation"].dtype == np.uint8

        batches = replay.transitions(replay.make_dataset(f"localhost:{server.port}", config.replay,
                                                         replay.layout_of(spec)))
        seen = set()
        for _ in range(40):
            batch = next(batches)
            assert batch.observation.dtype == np.uint8 and batch.observation.shape == (8, stack, 24, 32, 3)
            for i in range(len(batch.reward)):
                # Sampled actions are unique: they name the recorded step.
                e, t = next((e, t) for e, episode in enumerate(recorded) for t in range(EPISODE)
                            if np.array_equal(episode["action"][t], batch.action[i]))
                frames, k = recorded[e]["observation"], min(N_STEP, EPISODE - t)
                np.testing.assert_array_equal(batch.observation[i], frame_stack(frames, t, stack))
                np.testing.assert_array_equal(batch.next_observation[i], frame_stack(frames, t + k, stack))
                assert batch.reward[i] == pytest.approx(
                    sum(GAMMA**j * recorded[e]["reward"][t + 1 + j] for j in range(k)), rel=1e-5)
                assert batch.discount[i] == pytest.approx(GAMMA**k)
                seen.add((e, t))
        assert len(seen) == 4 * EPISODE
    finally:
        actor.close()
        server.stop()


def test_every_step_on_disk_was_sent_to_the_counter_before_it_was_written(tmp_path):
    """What a killed actor leaves: its counted steps cover its recorded ones, at every moment."""
    config = configs.make_experiment_config(agent="mpo", task="cartpole:swingup", run_dir=str(tmp_path), preset="debug",
                                            overrides=["replay.samples_per_insert=none"])
    spec = environment_spec(config.environment)
    server = reverb.Server([replay.make_online_table(config.replay, spec)], port=None)

    class SendingCounter:
        """Totals held until `send`, as launch.nodes.counter.CountBuffer holds them; each send checks the disk."""

        def __init__(self):
            self.held, self.sent, self.sends = 0, 0, 0

        def increment(self, steps=0, **_):
            self.held += steps

        def send(self):
            assert recorded_steps(config.run_dir) <= self.sent  # written since the last send: all sent before
            self.sent, self.sends = self.held, self.sends + 1
            return True

    counter = SendingCounter()
    actor = Actor(config, 0, reverb.Client(f"localhost:{server.port}"), PolicyServer(config, spec), counter=counter,
                  record_every_s=0.05)
    try:
        actor.run(3000)
        assert counter.sends >= 3 and 0 < recorded_steps(config.run_dir) <= counter.sent <= actor.steps
    finally:
        actor.close()
        server.stop()
    assert recorded_steps(config.run_dir) == actor.steps  # close writes the rest


def recorded_steps(run_dir):
    """The steps on disk: every recorded row but an episode's LAST (which carries no action)."""
    return sum(int(np.sum(e["step_type"] != 2))
               for directory in experience.actor_directories(run_dir) for e in experience.read_episodes(directory))
