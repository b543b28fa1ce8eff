"""Recorded experience: what an actor saw and did is what a later run reads back, exactly."""

import json
import os
import zipfile

import dm_env
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
    path.write_text(path.read_text().replace('"version": 2', '"version": 99'))
    with pytest.raises(ValueError, match="version 99; this Relay reads 'relay-experience' versions 1, 2"):
        experience.read_spec(str(tmp_path))


def test_a_pixel_run_records_one_uint8_frame_per_timestep_compressed(tmp_path):
    """Version 2: frames kept uint8 [K, H, W, 3], the stack's size noted in spec.json; frame
    chunks deflated, state chunks (the test above's run) stored as before."""
    from test_replay_frames import frame, pixel_spec

    experience.write_spec(str(tmp_path), "cartpole:swingup", pixel_spec(stack=3, size=8))
    recorder = experience.ExperienceRecorder(str(tmp_path), actor_id=0, chunk_steps=4, flush_every_s=1e9)
    recorder.add_first(dm_env.restart(frame(0)))
    for t in range(1, 7):
        timestep = dm_env.transition(np.float32(t), frame(t)) if t < 6 else dm_env.truncation(np.float32(t), frame(t))
        recorder.add(np.full((2,), t, np.float32), timestep)
    recorder.close()
    spec = experience.read_spec(str(tmp_path))
    stored = (spec["version"], spec["observation_shape"], spec["observation_dtype"], spec["frame_stack"])
    assert stored == (2, [8, 8, 3], "uint8", 3)
    actor_dir = experience.actor_directories(str(tmp_path))[0]
    (episode,) = experience.read_episodes(actor_dir)
    assert episode["observation"].dtype == np.uint8
    np.testing.assert_array_equal(episode["observation"], np.stack([frame(t) for t in range(7)]))
    assert episode["reward"].tolist() == [0.0, 1, 2, 3, 4, 5, 6]
    assert episode["step_type"].tolist() == [0] + [1] * 5 + [2]
    with zipfile.ZipFile(os.path.join(actor_dir, "00000000.npz")) as chunk:
        assert {info.compress_type for info in chunk.infolist()} == {zipfile.ZIP_DEFLATED}

    state_run, _ = _record(tmp_path / "state", episodes=1, episode_steps=3, chunk_steps=10)
    state_run.close()
    assert experience.read_spec(str(tmp_path / "state"))["observation_dtype"] == "float32"
    with zipfile.ZipFile(experience.actor_directories(str(tmp_path / "state"))[0] + "/00000000.npz") as chunk:
        assert {info.compress_type for info in chunk.infolist()} == {zipfile.ZIP_STORED}


def write_version_1_run(run_dir, observations: np.ndarray) -> None:
    """A run recorded by Relay before pixels (format version 1), written as that Relay wrote it:
    no observation dtype in spec.json, float32 observations in np.savez chunks."""
    directory = os.path.join(str(run_dir), "experience")
    os.makedirs(os.path.join(directory, "actor_0"))
    with open(os.path.join(directory, "spec.json"), "w") as file:
        json.dump({"format": "relay-experience", "version": 1, "task": "cartpole:swingup",
                   "observation_shape": [observations.shape[1]], "action_shape": [1], "action_minimum": [-1.0],
                   "action_maximum": [1.0], "columns": ["step_type", "reward", "discount", "observation", "action"]},
                  file, indent=2)
    steps = len(observations)
    np.savez(os.path.join(directory, "actor_0", "00000000.npz"),
             step_type=np.array([0] + [1] * (steps - 2) + [2], np.uint8),
             reward=np.arange(steps, dtype=np.float32), discount=np.ones(steps, np.float32),
             observation=observations.astype(np.float32), action=np.zeros((steps, 1), np.float32))


def test_a_version_1_run_still_loads(tmp_path):
    observations = np.arange(20, dtype=np.float32).reshape(4, 5)
    write_version_1_run(tmp_path, observations)
    spec = experience.read_spec(str(tmp_path))
    assert (spec["version"], spec["observation_shape"], spec["observation_dtype"]) == (1, [5], "float32")
    (episode,) = experience.read_episodes(experience.actor_directories(str(tmp_path))[0])
    np.testing.assert_array_equal(episode["observation"], observations)
    assert episode["observation"].dtype == np.float32 and episode["step_type"].tolist() == [0, 1, 1, 2]
