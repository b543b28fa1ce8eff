"""A real program learning from 64x64 frames: actors render, replay holds frames once, the learner
trains its encoder, actors take its newer policy; a later run replays it (RaE); evaluate films it."""

import os
import subprocess
import sys

import numpy as np
import psutil
import pytest

from replay import experience
from tests.test_program import ROOT, assert_no_orphans, csv_rows, read, run_to_end, train_command

# 64x64 frames, 3 stacked, action repeat 4 (250-step episodes), a narrow encoder (8 channels)
# so that the learner keeps up on a 2-core machine; everything else as the debug preset.
PIXELS = ("--set=pixels.height=64", "--set=pixels.width=64", "--set=pixels.shadows=false",
          "--set=environment.action_repeat=4", "--set=encoder.channels=8", "--set=replay.samples_per_insert=4")


def run_training(run_dir, *extra, timeout=420):
    result = subprocess.run(train_command(run_dir, "--launch_type=local_mp", *PIXELS, *extra),
                            cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output
    return result.stdout


def test_a_cheap_pixel_program_trains_from_frames_and_records_one_per_step(tmp_path):
    """The default run's program from pixels: 32x32 frames, one actor, threads, ~30 s. Actors render
    and act on frame stacks, the learner trains its encoder on them, actors take its newer
    policy, the evaluator acts on frames, and the recording holds one uint8 frame per step."""
    run_dir = str(tmp_path / "run")
    output = run_to_end(train_command(
        run_dir, "--num_actors=1", "--max_env_steps=800", "--launch_type=local_mt", "--set=pixels.height=32",
        "--set=pixels.width=32", *PIXELS[2:], "--set=experiment.actor_update_period=100"))
    assert "Finished: " in output
    learner = read(run_dir, "learner.json")
    assert learner["learner_steps"] > 20 and all(v == v for v in learner["metrics"].values())
    actor = read(run_dir, "actor_0.json")
    assert actor["actor_steps"] >= 800 and actor["param_versions_seen"][0] == 0 and max(actor["param_versions_seen"]) > 0
    assert len(csv_rows(run_dir, "evaluator")) >= 1
    spec = experience.read_spec(run_dir)
    assert spec["observation_shape"] == [32, 32, 3] and spec["observation_dtype"] == "uint8" and spec["frame_stack"] == 3
    [episode, *_] = experience.read_episodes(experience.actor_directories(run_dir)[0])
    assert episode["observation"].dtype == np.uint8 and episode["observation"].shape == (251, 32, 32, 3)
    assert np.any(episode["observation"][0] != episode["observation"][-1])  # frames of a moving cart


# ~4 minutes on 2 cores: slow (`make test-all`); the test above is the default run's pixel program.
@pytest.mark.slow
def test_a_program_learns_from_pixels_and_a_later_run_replays_its_frames(tmp_path):
    before = set(psutil.pids())
    run_a, run_b = str(tmp_path / "a"), str(tmp_path / "b")
    run_training(run_a, "--max_env_steps=3000")

    config = read(run_a, "config.json")
    assert config["environment"]["pixels"]["height"] == 64 and config["environment"]["pixels"]["frame_stack"] == 3
    learner = read(run_a, "learner.json")
    assert learner["learner_steps"] > 50 and all(v == v for v in learner["metrics"].values())
    for actor_id in range(2):
        actor = read(run_a, f"actor_{actor_id}.json")
        assert actor["actor_steps"] >= 1000
        # The actors started on version 0 and later acted with parameters the learner had trained.
        assert actor["param_versions_seen"][0] == 0 and max(actor["param_versions_seen"]) > 0
    assert all(np.isfinite(row["critic_loss"]) for row in csv_rows(run_a, "learner"))

    # The recording holds one uint8 frame per timestep, not the stacks.
    spec = experience.read_spec(run_a)
    assert spec["observation_shape"] == [64, 64, 3] and spec["observation_dtype"] == "uint8"
    episodes = list(experience.read_episodes(experience.actor_directories(run_a)[0]))
    assert episodes[0]["observation"].dtype == np.uint8 and episodes[0]["observation"].shape[1:] == (64, 64, 3)
    assert len(episodes[0]["step_type"]) == 251  # FIRST + 250 agent steps: 1000 control steps / action repeat 4
    recorded = sum(len(e["step_type"]) - 1 for d in experience.actor_directories(run_a)
                   for e in experience.read_episodes(d))

    # A second run from pixels replays A's frames: every recorded transition is an offline item.
    stdout = run_training(run_b, "--max_env_steps=1500", "--seed=1", f"--rae_from={run_a}")
    assert read(run_b, "rae.json")["items"] == recorded
    assert max(row["offline_size"] for row in csv_rows(run_b, "progress")) == recorded
    assert read(run_b, "learner.json")["learner_steps"] > 0
    assert "RaE: 1 runs" in stdout

    # A run from state cannot replay frames: refused before anything starts, naming both.
    refused = subprocess.run(train_command(str(tmp_path / "c"), f"--rae_from={run_a}"),
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "uint8" in refused.stderr and not (tmp_path / "c").exists()

    # Evaluate and film the pixel run's policy from its checkpoint.
    video = str(tmp_path / "policy.mp4")
    evaluated = subprocess.run(
        [sys.executable, "-m", "experiments.evaluate", f"--run={run_a}", "--episodes=1",
         f"--video={video}", "--video_size=48,64"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stdout[-2000:] + evaluated.stderr[-2000:]
    assert "mean return" in evaluated.stdout and os.path.getsize(video) > 1000
    assert_no_orphans(before, str(tmp_path))
