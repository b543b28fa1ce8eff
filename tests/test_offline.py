"""RaE on a live Reverb server: earlier runs' recorded steps become an offline table, mixed exactly."""

import numpy as np
import pytest
import reverb

import environments
import replay
from replay import experience, offline
from replay.config import ReplayConfig
from test_experience import write_version_1_run
from test_replay_frames import ACTIONS, drive, expected_items, pixel_spec, read_all

EPISODE = 40
CARTPOLE = replay.TransitionLayout(observation_dim=5, action_dim=1)


def _record_run(run_dir, seed, episodes=2, actors=1, task="cartpole:swingup", unfinished_steps=0):
    """A run directory whose actors recorded real episodes of `task` with random actions."""
    env = environments.make_environment(environments.EnvironmentConfig(task, seed=seed, max_episode_steps=EPISODE))
    experience.write_spec(str(run_dir), task, env.environment_spec)
    rng = np.random.default_rng(seed)
    action_shape = env.action_spec().shape
    for actor_id in range(actors):
        recorder = experience.ExperienceRecorder(str(run_dir), actor_id, chunk_steps=25)
        for episode in range(episodes + (1 if unfinished_steps else 0)):
            timestep = env.reset()
            recorder.add_first(timestep)
            steps = unfinished_steps if episode == episodes else EPISODE
            for _ in range(steps):
                # Each episode's actions sit in its own range, so returns differ from episode to episode.
                action = rng.uniform(-1, 1, action_shape).astype(np.float32) * (episode + 1) / (episodes + 1)
                timestep = env.step(action)
                recorder.add(action, timestep)
        recorder.close()
    return env.environment_spec


def _server(config, spec, offline_items):
    tables = [replay.make_online_table(config, spec), replay.make_offline_table(offline_items, spec, offline.OFFLINE_TABLE)]
    return reverb.Server(tables=tables, port=None)


def test_offline_table_holds_exactly_the_recorded_transitions(tmp_path):
    spec = _record_run(tmp_path / "a", seed=0, episodes=2, actors=2, unfinished_steps=7)
    run = offline.select_experience(str(tmp_path / "a"))
    # 2 actors x (2 finished episodes of 40 steps + 7 steps cut off: 6 with a recorded next step).
    assert run.steps == 2 * (2 * EPISODE + 6)
    config = ReplayConfig(min_size_to_sample=1, samples_per_insert=None, batch_size=16, n_step=3, discount=0.9)
    server = _server(config, spec, run.steps)
    client = reverb.Client(f"localhost:{server.port}")
    assert offline.write_offline(client, [run], config) == run.steps
    assert client.server_info()[offline.OFFLINE_TABLE].current_size == run.steps
    # Items are n-step transitions rebuilt with this run's n and γ: check them against the recorded steps.
    episodes = run.episodes
    observations = np.concatenate([e["observation"] for e in episodes])
    batches = replay.transitions(replay.make_dataset(f"localhost:{server.port}", config, CARTPOLE, offline.OFFLINE_TABLE))
    for _ in range(10):
        batch = next(batches)
        for obs, action, reward, discount, next_obs in zip(batch.observation, batch.action, batch.reward,
                                                           batch.discount, batch.next_observation):
            e, t = next((e, int(np.flatnonzero((e["observation"] == obs).all(axis=1))[0]))
                        for e in episodes if (e["observation"] == obs).all(axis=1).any())
            k = min(3, len(e["step_type"]) - 1 - t)
            np.testing.assert_array_equal(action, e["action"][t])
            assert reward == pytest.approx(sum(0.9**i * e["reward"][t + 1 + i] for i in range(k)), rel=1e-5)
            assert discount == pytest.approx(0.9**k, rel=1e-6)
            np.testing.assert_array_equal(next_obs, e["observation"][t + k])
    assert observations.shape[0] == sum(len(e["step_type"]) for e in episodes)
    server.stop()


def _mixing_server(tmp_path, batch_size):
    """Run A's experience in the offline table, an episode of another seed in the online one."""
    spec = _record_run(tmp_path / "a", seed=0)
    run = offline.select_experience(str(tmp_path / "a"))
    config = ReplayConfig(min_size_to_sample=1, samples_per_insert=None, batch_size=batch_size, n_step=2)
    server = _server(config, spec, run.steps)
    client = reverb.Client(f"localhost:{server.port}")
    offline.write_offline(client, [run], config)
    # Online data from another seed: its observations never equal run A's.
    env = environments.make_environment(environments.EnvironmentConfig("cartpole:swingup", seed=1, max_episode_steps=EPISODE))
    writer = replay.make_writer(client, config, replay.ONLINE_TABLE)
    timestep = env.reset()
    writer.add_first(timestep)
    while not timestep.last():
        timestep = env.step(np.full((1,), 0.3, np.float32))
        writer.add(np.full((1,), 0.3, np.float32), timestep)
    writer.flush()
    writer.close()
    offline_observations = {tuple(o) for e in run.episodes for o in e["observation"]}
    return server, config, offline_observations


@pytest.mark.parametrize("ratio, batch_size", [(0.5, 8), (0.25, 16)])
def test_every_mixed_batch_holds_exactly_the_offline_share(tmp_path, ratio, batch_size):
    server, config, offline_observations = _mixing_server(tmp_path, batch_size)
    address = f"localhost:{server.port}"
    offline_size = int(round(ratio * batch_size))
    batches = replay.mixed_transitions(
        replay.make_dataset(address, config, CARTPOLE, replay.ONLINE_TABLE, batch_size - offline_size),
        replay.make_dataset(address, config, CARTPOLE, offline.OFFLINE_TABLE, offline_size),
        batch_size, offline_count=lambda i: offline_size)
    for _ in range(300):
        batch = next(batches)
        assert batch.observation.shape[0] == batch_size
        assert sum(tuple(o) in offline_observations for o in batch.observation) == offline_size
    server.stop()


def _items_sampled(server, table):
    import reverb

    info = reverb.Client(f"localhost:{server.port}").server_info()[table]
    return info.rate_limiter_info.sample_stats.completed


@pytest.mark.parametrize("first_step", [0, 60])
def test_an_annealed_share_is_exact_in_every_batch_and_samples_only_what_it_uses(tmp_path, first_step):
    """first_step 60: a run resumed at learner step 60 goes on with the anneal from there."""
    from launch.config import RaEConfig

    rae = RaEConfig(runs=("a",), ratio=0.5, final_ratio=0.0, anneal_learner_steps=100)
    server, config, offline_observations = _mixing_server(tmp_path, batch_size=8)
    address = f"localhost:{server.port}"
    first_offline = rae.offline_batch_size(8, first_step)
    batches = replay.mixed_transitions(
        replay.make_dataset(address, config, CARTPOLE, replay.ONLINE_TABLE, 8 - first_offline),
        replay.make_dataset(address, config, CARTPOLE, offline.OFFLINE_TABLE, first_offline),
        8, offline_count=lambda i: rae.offline_batch_size(8, first_step + i))
    counts = []
    for _ in range(150):
        batch = next(batches)
        assert batch.observation.shape[0] == 8
        counts.append(sum(tuple(o) in offline_observations for o in batch.observation))
    # 0.5 -> 0 over 100 steps: round(8 x 0.5 x (1 - step/100)) offline items at learner step `step`, none from 100 on.
    assert counts == [int(round(8 * 0.5 * (1 - min(first_step + i, 100) / 100))) for i in range(150)]
    assert counts[0] == (4 if first_step == 0 else 2)
    # Items are sampled as batches use them: beyond those used, at most what tf.data and Reverb's
    # client hold in flight (two batches of the dataset's size each) and one held over. Sampling a
    # full batch from each table would have taken 8 offline items a step, 1,200 in all.
    for table, used in ((offline.OFFLINE_TABLE, sum(counts)), (replay.ONLINE_TABLE, 8 * 150 - sum(counts))):
        assert used <= _items_sampled(server, table) <= used + 5 * 8
    server.stop()


def test_selection_keeps_recent_steps_and_good_episodes(tmp_path):
    _record_run(tmp_path / "a", seed=0, episodes=4)
    every = offline.select_experience(str(tmp_path / "a"))
    returns = [float(np.sum(e["reward"])) for e in every.episodes]
    assert len(returns) == 4 and len(set(returns)) == 4
    recent = offline.select_experience(str(tmp_path / "a"), max_steps=2 * EPISODE)
    assert [float(np.sum(e["reward"])) for e in recent.episodes] == returns[2:]
    threshold = sorted(returns)[2]
    good = offline.select_experience(str(tmp_path / "a"), min_return=threshold)
    assert sorted(float(np.sum(e["reward"])) for e in good.episodes) == sorted(r for r in returns if r >= threshold)


def test_a_run_of_another_task_is_refused_naming_both_specs(tmp_path):
    _record_run(tmp_path / "walker", seed=0, episodes=1, task="walker:walk")
    cartpole = environments.environment_spec(environments.EnvironmentConfig("cartpole:swingup"))
    with pytest.raises(ValueError, match=r"recorded task walker:walk with observations \[24\] float32 and actions "
                                         r"\[6\]; this run is task cartpole:swingup with observations \[5\] float32 "
                                         r"and actions \[1\]"):
        offline.check_compatible(str(tmp_path / "walker"), "cartpole:swingup", cartpole)


def test_a_corrupt_chunk_is_named_and_the_rest_loads_on_request(tmp_path):
    _record_run(tmp_path / "a", seed=0, episodes=4)  # 164 rows in chunks of 25
    actor_dir = experience.actor_directories(str(tmp_path / "a"))[0]
    damaged = actor_dir + "/00000002.npz"  # rows 50-74: inside the second episode (rows 41-81)
    with open(damaged, "r+b") as file:
        file.truncate(64)
    with pytest.raises(ValueError, match="00000002.npz is not a readable experience chunk.*--rae_skip_corrupt"):
        offline.select_experience(str(tmp_path / "a"))
    rest = offline.select_experience(str(tmp_path / "a"), skip_corrupt=True)
    assert rest.skipped_files == [damaged]
    # The damaged chunk cuts episode 2; episodes 1, 3 and 4 load whole.
    assert [len(e["step_type"]) for e in rest.episodes] == [EPISODE + 1] * 3
    assert all(e["step_type"][0] == 0 and e["step_type"][-1] == 2 for e in rest.episodes)


def test_run_paths_and_globs_resolve_to_recorded_runs_only(tmp_path):
    _record_run(tmp_path / "a", seed=0, episodes=1)
    (tmp_path / "b").mkdir()  # a directory without recorded experience
    assert offline.resolve_runs([str(tmp_path / "*"), str(tmp_path / "a")]) == [str(tmp_path / "a")]
    with pytest.raises(ValueError, match="has no experience/ directory"):
        offline.resolve_runs([str(tmp_path / "b")])
    with pytest.raises(ValueError, match="matches no run directory with recorded experience"):
        offline.resolve_runs([str(tmp_path / "c*")])


def _record_pixel_run(run_dir, writer=None):
    """A pixel run's recording of test_replay_frames' scripted episodes (two environments), each
    step also handed to `writer` as an actor hands it both."""
    experience.write_spec(str(run_dir), "cartpole:swingup", pixel_spec())
    recorders = [experience.ExperienceRecorder(str(run_dir), 0, chunk_steps=5, env_index=env) for env in (0, 1)]

    class Actor:  # the actor's calls on its writer and its recorders, for each environment
        def add_first(self, timestep, env):
            recorders[env].add_first(timestep)
            if writer is not None:
                writer.add_first(timestep, env)

        def add(self, action, timestep, env):
            recorders[env].add(action, timestep)
            if writer is not None:
                writer.add(action, timestep, env)

        def end_unfinished_episode(self, env):
            recorders[env].end_unfinished_episode(np.zeros(ACTIONS, np.float32))
            if writer is not None:
                writer.end_unfinished_episode(env)

    drive(Actor())
    for recorder in recorders:
        recorder.close()


def test_a_recorded_pixel_run_loads_as_exactly_the_items_its_actor_wrote(tmp_path):
    spec = pixel_spec()
    layout = replay.layout_of(spec)
    config = ReplayConfig(min_size_to_sample=1, samples_per_insert=None, n_step=3, discount=0.9)
    server = reverb.Server([reverb.Table.queue(name, 100, signature=layout.signature()) for name in ("actor", "rae")],
                           port=None)
    address = f"localhost:{server.port}"
    client = reverb.Client(address)
    actor_writer = replay.make_writer(client, config, "actor", num_envs=2, layout=layout)
    _record_pixel_run(tmp_path / "pixels", actor_writer)
    actor_writer.flush()
    actor_writer.close()

    offline.check_compatible(str(tmp_path / "pixels"), "cartpole:swingup", spec)
    run = offline.select_experience(str(tmp_path / "pixels"))
    items = len(expected_items())
    assert run.steps == items
    assert offline.write_offline(client, [run], config, table="rae", layout=layout) == items
    from_actor, from_rae = (read_all(address, layout, table, items) for table in ("actor", "rae"))
    by_step = lambda batch: {int(a[0]): i for i, a in enumerate(batch.action)}  # noqa: E731
    actor_index, rae_index = by_step(from_actor), by_step(from_rae)
    assert sorted(actor_index) == sorted(rae_index) == sorted(expected_items())
    for code, i in actor_index.items():
        for field in ("observation", "action", "reward", "discount", "next_observation"):
            np.testing.assert_array_equal(getattr(from_rae, field)[rae_index[code]], getattr(from_actor, field)[i])
    server.stop()


def test_a_pixel_run_of_another_frame_shape_or_dtype_is_refused_naming_both(tmp_path):
    _record_pixel_run(tmp_path / "pixels")
    run_dir = str(tmp_path / "pixels")
    offline.check_compatible(run_dir, "cartpole:swingup", pixel_spec(stack=4))  # a stack of its own: restacked
    with pytest.raises(ValueError, match=r"recorded task cartpole:swingup with observations \[8, 8, 3\] uint8 and "
                                         r"actions \[2\]; this run is task cartpole:swingup with observations "
                                         r"\[16, 16, 3\] uint8 and actions \[2\]"):
        offline.check_compatible(run_dir, "cartpole:swingup", pixel_spec(size=16))
    spec_path = tmp_path / "pixels" / "experience" / "spec.json"
    spec_path.write_text(spec_path.read_text().replace('"uint8"', '"float32"'))
    with pytest.raises(ValueError, match=r"observations \[8, 8, 3\] float32 and actions \[2\]; this run is task "
                                         r"cartpole:swingup with observations \[8, 8, 3\] uint8"):
        offline.check_compatible(run_dir, "cartpole:swingup", pixel_spec())


def test_a_version_1_run_feeds_a_state_run(tmp_path):
    write_version_1_run(tmp_path, np.arange(20, dtype=np.float32).reshape(4, 5))
    cartpole = environments.environment_spec(environments.EnvironmentConfig("cartpole:swingup"))
    assert offline.check_compatible(str(tmp_path), "cartpole:swingup", cartpole)["observation_dtype"] == "float32"
    run = offline.select_experience(str(tmp_path))
    server = reverb.Server([replay.make_offline_table(run.steps, cartpole, offline.OFFLINE_TABLE)], port=None)
    assert offline.write_offline(reverb.Client(f"localhost:{server.port}"), [run], ReplayConfig(n_step=2)) == 3
    server.stop()
    with pytest.raises(ValueError, match=r"observations \[5\] float32 and actions \[1\]; this run is task "
                                         r"cartpole:swingup with observations \[8, 8, 3\] uint8"):
        offline.check_compatible(str(tmp_path), "cartpole:swingup", pixel_spec(action_dim=1))
