"""Recorded experience: what an actor saw and did is what a later run reads back, exactly."""

import numpy as np
import pytest

import environments
from replay import experience


def _record(run_dir, episodes, episode_steps, chunk_steps, seed=0):
    """Runs a real task with random actions through a recorder; returns what it saw and did."""
    env = environments.make_environment(
        environments.EnvironmentConfig("cartpole:swingup", seed=seed, max_episode_steps=episode_steps))
    experience.write_spec(str(run_dir), "cartpole:swingup", env.environment_spec)
    recorder = experience.ExperienceRecorder(str(run_dir), actor_id=0, chunk_steps=chunk_steps, flush_every_s=1e9)
    rng = np.random.default_rng(seed)
    seen = []
    for _ in range(episodes):
        timestep = env.reset()
        recorder.add_first(timestep)
        timesteps, actions = [timestep], []
        while not timestep.last():
            action = rng.uniform(-1, 1, (1,)).astype(np.float32)
            timestep = env.step(action)
            recorder.add(action, timestep)
            timesteps.append(timestep)
            actions.append(action)
        seen.append((timesteps, actions))
    return recorder, seen


def test_episodes_read_back_exactly_across_chunk_boundaries(tmp_path):
    # 3 episodes of 7 steps are 24 timesteps; chunks of 5 split every episode somewhere.
    recorder, seen = _record(tmp_path, episodes=3, episode_steps=7, chunk_steps=5)
    recorder.close()
    episodes = list(experience.read_episodes(experience.actor_directories(str(tmp_path))[0]))
    assert len(episodes) == 3
    for episode, (timesteps, actions) in zip(episodes, seen):
        assert episode["step_type"].tolist() == [0] + [1] * 6 + [2]
        np.testing.assert_array_equal(episode["observation"], np.stack([t.observation for t in timesteps]))
        np.testing.assert_array_equal(episode["action"], np.stack(actions + [np.zeros(1, np.float32)]))
        assert episode["reward"].tolist() == [0.0] + [float(t.reward) for t in timesteps[1:]]
        assert episode["discount"].tolist() == [1.0] * 8  # truncated, never terminal
    spec = experience.read_spec(str(tmp_path))
    assert spec["observation_shape"] == [5] and spec["action_shape"] == [1] and spec["task"] == "cartpole:swingup"


def test_a_restarted_recorder_appends_chunks_and_never_rewrites_one(tmp_path):
    first, _ = _record(tmp_path, episodes=1, episode_steps=4, chunk_steps=100)
    first.close()
    chunk = experience.actor_directories(str(tmp_path))[0] + "/00000000.npz"
    before = open(chunk, "rb").read()
    second, _ = _record(tmp_path, episodes=1, episode_steps=4, chunk_steps=100, seed=1)
    second.close()
    assert open(chunk, "rb").read() == before
    assert len(list(experience.read_episodes(experience.actor_directories(str(tmp_path))[0]))) == 2


def test_an_unfinished_episode_is_kept_and_a_damaged_chunk_is_named(tmp_path):
    recorder, _ = _record(tmp_path, episodes=1, episode_steps=6, chunk_steps=100)
    env = environments.make_environment(environments.EnvironmentConfig("cartpole:swingup", seed=2))
    timestep = env.reset()
    recorder.add_first(timestep)
    for _ in range(3):
        timestep = env.step(np.zeros(1, np.float32))
        recorder.add(np.zeros(1, np.float32), timestep)
    recorder.close()  # stopped mid-episode: 3 timesteps with actions are written, the 4th awaits its action
    actor_dir = experience.actor_directories(str(tmp_path))[0]
    episodes = list(experience.read_episodes(actor_dir))
    assert [len(e["step_type"]) for e in episodes] == [7, 3]
    assert episodes[1]["step_type"].tolist() == [0, 1, 1]
    with open(actor_dir + "/00000000.npz", "r+b") as file:
        file.truncate(100)
    with pytest.raises(ValueError, match="00000000.npz is not a readable experience chunk"):
        list(experience.read_episodes(actor_dir))


def test_a_spec_of_another_format_version_is_refused(tmp_path):
    recorder, _ = _record(tmp_path, episodes=1, episode_steps=2, chunk_steps=10)
    recorder.close()
    path = tmp_path / "experience" / "spec.json"
    path.write_text(path.read_text().replace('"version": 1', '"version": 99'))
    with pytest.raises(ValueError, match="version 99; this Relay reads 'relay-experience' version 1"):
        experience.read_spec(str(tmp_path))
