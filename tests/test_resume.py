"""Checkpoints used across runs, with real programs: resume after SIGKILL, --init_from, evaluate."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import psutil
import pytest

from test_program import ROOT, assert_no_orphans, csv_rows, read, run_to_end, train_command

# Whole programs, one at a time in one of the suite's two processes (setup.cfg): the other runs
# the tests that need no program of their own.
pytestmark = pytest.mark.xdist_group("programs")

def recorded_transitions(run_dir):
    """Transitions in the run's recorded experience, counted from the files: one per step after FIRST."""
    from replay import experience

    return sum(len(episode["step_type"]) - 1 for actor in experience.actor_directories(run_dir)
               for episode in experience.read_episodes(actor))


def greedy_actions(config_run_dir, policy_params, observations):
    import agents
    from launch.config import ExperimentConfig, dataclass_from_json

    config = dataclass_from_json(ExperimentConfig, read(config_run_dir, "config.json"))
    _, greedy = agents.make_policy_fns(agents.Networks(config.learner, 1))
    return np.asarray(greedy(policy_params, observations))


def test_every_stop_leaves_a_checkpoint_of_the_last_step(finished_run):
    from launch.rundir import checkpoints

    steps = checkpoints.list_steps(finished_run)
    learner_steps = read(finished_run, "learner.json")["learner_steps"]
    assert steps[-1] == learner_steps and len(steps) == 3  # the final save, and the newest K=3 kept
    checkpoint = checkpoints.load(os.path.join(finished_run, "checkpoints", str(steps[-1])))
    # Saved at the stop, unless a periodic save had just saved that very step.
    assert checkpoint.meta["reason"] == "final" or learner_steps % 100 == 0
    assert checkpoint.meta["counts"]["learner_steps"] == learner_steps
    assert checkpoint.meta["agent"] == "mpo" and checkpoint.meta["task"] == "cartpole:swingup"


def test_init_from_starts_from_the_source_networks_exactly(finished_run, tmp_path, capsys):
    """What the launcher makes of --init_from (checked, then in config.json), and the state the
    learner node starts from with it (`initial_state`, which the node calls): the source's
    networks bit for bit, targets equal to them, everything else fresh."""
    import agents
    from experiments import configs
    from launch import NewRun
    from launch.loops.learner import initial_state
    from launch.rundir import checkpoints
    from launch.rundir.run_config import read_config, write_config
    from launch.runtime.run_setup import prepare_new_run

    source, _ = checkpoints.load_latest(finished_run)
    new = configs.make_experiment_config(agent="mpo", task="cartpole:swingup", run_dir=str(tmp_path / "warm"),
                                         preset="debug")
    config, spec = prepare_new_run(NewRun(new, init_from=f"{finished_run}:all"))
    write_config(config)
    assert f"Initialising the policy and critic from {source.path}" in capsys.readouterr().out
    assert read(config.run_dir, "config.json")["init_from"] == {"checkpoint": source.path, "parts": "all"}
    config = read_config(config.run_dir)
    learner = agents.Learner(config.learner, spec.observations.shape, spec.actions.shape[0])
    start = jax.device_get(initial_state(config, learner))
    assert int(start.steps) == 0
    observations = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)
    expected = greedy_actions(finished_run, source.state["policy_params"], observations)
    np.testing.assert_array_equal(greedy_actions(config.run_dir, start.policy_params, observations), expected)
    for key in ("critic_params", "target_critic_params"):
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(getattr(start, key)),
                                                        jax.tree_util.tree_leaves(source.state["critic_params"])))
    # Fresh optimizer: Adam's moments are zero again.
    assert all(not np.any(leaf) for leaf in jax.tree_util.tree_leaves(start.policy_opt_state))


def test_init_from_a_network_of_another_shape_stops_the_launch(finished_run, tmp_path, capsys):
    from test_program import train_main

    run_dir = tmp_path / "mismatch"
    command = train_command(str(run_dir), f"--init_from={finished_run}:critic")
    command[command.index("--agent=mpo")] = "--agent=mog"
    assert train_main(capsys, *command[3:]) == 2
    assert "critic_params/params/head/kernel: checkpoint (32, 1) vs this run (32, 15)" in capsys.readouterr().err
    assert not run_dir.exists()


def test_evaluate_prints_returns_and_writes_a_gif(finished_run, tmp_path, capsys):
    from PIL import Image

    from experiments import evaluate

    assert evaluate.main([f"--run={finished_run}", "--episodes=2"]) == 0
    stdout = capsys.readouterr().out
    returns = [float(line.split("return ")[1]) for line in stdout.splitlines() if line.startswith("episode ")]
    assert len(returns) == 2 and all(0.0 <= r <= 1000.0 for r in returns)
    mean = float(stdout.split("mean return ")[1].split()[0])
    # Each figure is printed to 0.1: the printed mean and the mean of the printed returns differ by <= 0.1.
    assert mean == pytest.approx(np.mean(returns), abs=0.1 + 1e-9)
    # A .gif is written by Pillow (filming itself: the .mp4 test below): every frame, in order.
    frames = [np.full((48, 64, 3), 20 * k, np.uint8) for k in range(12)]
    video = str(tmp_path / "policy.gif")
    evaluate.write_video(frames, video, fps=30.0)
    with Image.open(video) as gif:
        assert gif.n_frames == 12 and gif.size == (64, 48)
        gif.seek(7)
        assert np.asarray(gif.convert("RGB"))[0, 0].tolist() == [140] * 3


def test_evaluate_writes_an_mp4_that_decodes_without_a_system_ffmpeg(finished_run, tmp_path):
    """.mp4 goes through the ffmpeg binary of the imageio-ffmpeg wheel; decoding it back with
    that binary gives every frame, so the file plays."""
    import imageio_ffmpeg

    video = str(tmp_path / "policy.mp4")
    env = {k: v for k, v in os.environ.items() if k != "PATH"}
    env["PATH"] = os.path.dirname(sys.executable)  # nothing else on the PATH: no system ffmpeg
    result = subprocess.run(
        [sys.executable, "-m", "experiments.evaluate", f"--run={finished_run}", "--episodes=1", f"--video={video}",
         "--video_size=48,64"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # One cartpole episode (1000 steps of 10 ms) filmed at ~30 fps: 334 frames, and they move.
    assert "(334 frames at 33 fps" in result.stdout
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(video)
    assert frames == 334 and seconds == pytest.approx(10.0, abs=0.1)
    reader = imageio_ffmpeg.read_frames(video)
    size = next(reader)["size"]
    decoded = [np.frombuffer(frame, np.uint8).reshape(size[1], size[0], 3) for frame in reader]
    assert len(decoded) == 334 and np.any(decoded[200] != decoded[0])


def test_evaluate_skips_a_damaged_checkpoint_with_a_warning(finished_run, tmp_path, capsys):
    import shutil

    from launch.rundir import checkpoints

    copy = str(tmp_path / "copy")
    shutil.copytree(finished_run, copy)
    steps = checkpoints.list_steps(copy)
    state_dir = os.path.join(copy, "checkpoints", str(steps[-1]), "state")
    data = max((os.path.join(d, f) for d, _, files in os.walk(state_dir) for f in files), key=os.path.getsize)
    with open(data, "r+b") as file:
        file.truncate(os.path.getsize(data) // 2)
    from experiments import evaluate

    assert evaluate.main([f"--run={copy}", "--episodes=1"]) == 0
    shown = capsys.readouterr()
    assert f"warning: Skipping checkpoint {steps[-1]}" in shown.err
    assert f"(learner step {steps[-2]}," in shown.out and "mean return" in shown.out


def test_evaluate_explains_a_bad_request(finished_run, tmp_path, capsys):
    from experiments import evaluate

    cases = [([f"--run={tmp_path}"], "not a Relay run directory"),
             ([f"--run={finished_run}", "--checkpoint=7"], "no checkpoint at learner step 7"),
             ([f"--run={finished_run}", "--video=out.avi"], ".gif or .mp4")]
    for flags, message in cases:
        assert evaluate.main(flags) == 2
        error = capsys.readouterr().err
        assert message in error, error[-2000:]


def test_a_killed_run_resumes_where_its_last_checkpoint_was(tmp_path):
    from launch.rundir import checkpoints

    run_dir = str(tmp_path / "run")
    before = set(psutil.pids())
    # Checkpoints by time here (every 2.4 s), by learner steps in finished_run.
    launcher = subprocess.Popen(
        train_command(run_dir, "--max_env_steps=100000000", "--launch_type=local_mp",
                      "--set=experiment.checkpoint_every_minutes=0.04",
                      "--set=experiment.checkpoint_every_learner_steps=1000000"),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and len(checkpoints.list_steps(run_dir)) < 2:
        time.sleep(0.5)
    os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and every node: no final save, no flush
    launcher.wait(timeout=30)
    for process in psutil.process_iter(["pid", "cmdline"]):
        if run_dir in " ".join(process.info["cmdline"] or []):
            process.kill()
    # What the killed run recorded reads back whole: every chunk file complete, every episode from its start.
    from replay import experience
    assert experience.read_spec(run_dir)["task"] == "cartpole:swingup"
    episodes = [e for actor in experience.actor_directories(run_dir) for e in experience.read_episodes(actor)]
    assert sum(len(e["step_type"]) for e in episodes) >= 2
    assert all(e["step_type"][0] == 0 and np.all(np.isfinite(e["observation"])) for e in episodes)
    last, _ = checkpoints.load_latest(run_dir)
    previous = checkpoints.load(os.path.join(run_dir, "checkpoints", str(checkpoints.list_steps(run_dir)[-2])))
    assert last.meta["reason"] == previous.meta["reason"] == "periodic" and last.step > previous.step > 0
    assert last.meta["saved_at"] - previous.meta["saved_at"] >= 0.04 * 60 * 0.95
    env_steps_at_checkpoint = last.meta["counts"]["actor_steps"]
    assert env_steps_at_checkpoint > 0
    recorded = recorded_transitions(run_dir)
    progress_rows_before = len(csv_rows(run_dir, "progress"))
    learner_rows_before = len(csv_rows(run_dir, "learner"))

    target = int(env_steps_at_checkpoint) + 3000
    output = run_to_end([sys.executable, "-m", "experiments.train", f"--resume={run_dir}", f"--max_env_steps={target}"])
    assert f"Resuming {run_dir} (launch 2) from learner step {last.step}" in output
    resume = read(run_dir, "resumes.json")[-1]
    assert resume["checkpoint"] == last.path and resume["refill_items"] == recorded

    # The counters went on from the checkpoint's values, not from zero.
    progress = csv_rows(run_dir, "progress")[progress_rows_before:]
    assert progress and min(row["env_steps"] for row in progress) >= env_steps_at_checkpoint
    assert min(row["learner_steps"] for row in progress) >= last.step
    learner = csv_rows(run_dir, "learner")[learner_rows_before:]
    assert learner and min(row["learner_step"] for row in learner) > last.step
    # Replay held the run's whole recorded experience before the actors added to it.
    assert max(row["replay_size"] for row in progress) >= recorded
    # Learning went on: more updates, a newer checkpoint, evaluations past the restored step.
    summary = read(run_dir, "summary.json")
    assert summary["learner_steps"] > last.step and summary["reached_max_env_steps"]
    assert summary["env_steps"] >= target and summary["resumed_at"]["learner_steps"] == last.step
    assert checkpoints.list_steps(run_dir)[-1] == summary["learner_steps"]
    evaluations = csv_rows(run_dir, "evaluator")
    assert evaluations[-1]["learner_step"] >= last.step and evaluations[-1]["env_steps"] >= env_steps_at_checkpoint
    # Each launch's node logs are kept.
    for logs in ("logs", os.path.join("logs", "launch_1")):
        assert os.path.getsize(os.path.join(run_dir, logs, "learner", "0")) > 0
    # The experience of both launches is on disk, in order, for the next resume or RaE.
    assert recorded_transitions(run_dir) > recorded
    listing = json.loads(subprocess.run([sys.executable, "-m", "experiments.runs", "list", f"--root={tmp_path}", "--json"],
                                        cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    assert listing[0]["checkpoint"]["learner_step"] == summary["learner_steps"]
    assert_no_orphans(before, run_dir)


def test_resume_refuses_what_it_cannot_do(finished_run, tmp_path, capsys):
    from test_program import train_main

    cases = [
        ([f"--resume={tmp_path}"], "not a Relay run directory"),
        ([f"--resume={finished_run}"], "pass a larger --max_env_steps"),
        ([f"--resume={finished_run}", "--agent=mog", "--max_env_steps=9000"], "drop --agent"),
    ]
    for flags, message in cases:
        assert train_main(capsys, *flags) == 2
        error = capsys.readouterr().err
        assert message in error, error[-2000:]
