"""A node process killed mid-run (local_mp): its supervisor starts it again and the run goes on
to max_env_steps; a node that keeps dying stops the run, naming it."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import psutil
import pytest

from test_program import ROOT, assert_no_orphans, csv_rows, learner_has_updated, read, train_command, wait_for

# Long enough after a kill at ~2,000 steps for the restarted node to start (7-14 s of imports
# on 2 cores) and work, on a machine that steps ~900 env steps/s.
MAX_ENV_STEPS = 24000
CHECKPOINT_EVERY = "--set=experiment.checkpoint_every_learner_steps=100"


def node_process(run_dir, node, attempt=0):
    """The node's own process (its supervisor's child), by its command line."""
    launch_dir = os.path.join(run_dir, "launches", "0")
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if (f"--launch_dir={launch_dir}" in cmdline and f"--node={node}" in cmdline
                and f"--attempt={attempt}" in cmdline):
            return process
    return None


def counted(run_dir):
    """The counter's totals as it last saved them (every 0.5 s)."""
    path = os.path.join(run_dir, "launches", "0", "counter_state.json")
    try:
        with open(path) as file:
            state = json.load(file)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    totals = dict(state["values"])
    for sender in state["by_sender"].values():
        for key, value in sender.items():
            totals[key] = totals.get(key, 0) + value
    return totals


def restarts(run_dir):
    path = os.path.join(run_dir, "restarts.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [json.loads(line) for line in file if line.endswith("\n")]


def log_of(run_dir, node):
    with open(os.path.join(run_dir, "logs", *node.split("/"))) as file:
        return file.read()


def kill_mid_run(tmp_path, node, ready, *extra):
    """Starts a local_mp run, SIGKILLs `node`'s process once `ready(run_dir)`, and waits for the
    run to end; returns (run_dir, launcher output, time of the kill, the counts then)."""
    run_dir = str(tmp_path / "run")
    before = set(psutil.pids())
    launcher = subprocess.Popen(
        train_command(run_dir, f"--max_env_steps={MAX_ENV_STEPS}", "--launch_type=local_mp", CHECKPOINT_EVERY, *extra),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: ready(run_dir), 300, f"the run to be ready for the kill of {node}")
        victim = node_process(run_dir, node)
        assert victim is not None, f"no process for {node}"
        victim.send_signal(signal.SIGKILL)
        killed_at, at_kill = time.time(), counted(run_dir)
        output, _ = launcher.communicate(timeout=400)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    assert_no_orphans(before)
    return run_dir, output, killed_at, at_kill


def assert_restarted_once(run_dir, output, node, killed_at):
    [record] = restarts(run_dir)
    assert record["node"] == node and record["cause"] == "signal 9 (SIGKILL)" and record["restarted"]
    assert record["attempt"] == 0 and killed_at - 1 <= record["time"] <= killed_at + 30
    assert f"restart: node {node} died (signal 9 (SIGKILL))" in output  # on the launcher's terminal
    summary = read(run_dir, "summary.json")
    assert summary["restarts"] == [{"node": node, "cause": "signal 9 (SIGKILL)", "restarted": True}]
    assert summary["reached_max_env_steps"] and summary["env_steps"] >= MAX_ENV_STEPS
    return summary


def assert_counts_add_up(run_dir, summary):
    """The summary is the counter's totals: its senders' totals, each counted once."""
    totals = counted(run_dir)
    assert summary["env_steps"] == totals["actor_steps"] == read(run_dir, "counts.json")["actor_steps"]
    assert summary["learner_steps"] == totals["learner_steps"] == read(run_dir, "learner.json")["learner_steps"]


def assert_final_checkpoint_loads(run_dir, summary):
    from launch.rundir import checkpoints

    checkpoint, damaged = checkpoints.load_latest(run_dir)
    assert damaged == [] and checkpoint.step == summary["learner_steps"] == int(checkpoint.state["steps"])


def recorded_steps(run_dir, stream):
    """Steps an actor took that are on disk (every recorded step but the LASTs)."""
    from replay import experience

    return sum(int(np.sum(e["step_type"] != 2))
               for e in experience.read_episodes(os.path.join(run_dir, "experience", stream)))


def actor_senders(run_dir, actor):
    with open(os.path.join(run_dir, "launches", "0", "counter_state.json")) as file:
        state = json.load(file)
    return [totals for sender, totals in state["by_sender"].items() if sender.startswith(f"{actor}-")]


def test_a_killed_actor_is_restarted_with_a_fresh_seed_and_nothing_counted_twice(tmp_path):
    run_dir, output, killed_at, _ = kill_mid_run(
        tmp_path, "actor/1", lambda run_dir: counted(run_dir).get("actor_steps", 0) >= 1500)
    summary = assert_restarted_once(run_dir, output, "actor/1", killed_at)
    assert_counts_add_up(run_dir, summary)
    assert_final_checkpoint_loads(run_dir, summary)
    # Two processes of actor 1 reported, each its own totals; the restarted one's are its actor_1.json.
    restarted_steps = read(run_dir, "actor_1.json")["actor_steps"]
    senders = actor_senders(run_dir, "actor_1")
    assert len(senders) == 2 and restarted_steps in [totals["actor_steps"] for totals in senders]
    dead = next(totals for totals in senders if totals["actor_steps"] != restarted_steps)
    assert dead["actor_steps"] > 0 and restarted_steps > 0
    # On disk: what both processes recorded. The dead one's last <= 2 s of steps (not yet
    # written) are lost. It sent its counts to the counter before each chunk it wrote, so
    # it counted every step it recorded. (Before, counts went out at most every 0.5 s and
    # chunks every 2 s on their own clocks: up to 0.5 s of steps plus one count batch could
    # be on disk uncounted; 131 were seen.)
    recorded_by_dead = recorded_steps(run_dir, "actor_1") - restarted_steps
    assert 0 < recorded_by_dead <= dead["actor_steps"]
    # The restarted actor drew fresh seeds: its first episode differs from the first launch's.
    from replay import experience
    episodes = list(experience.read_episodes(os.path.join(run_dir, "experience", "actor_1")))
    firsts = [e["observation"][0] for e in episodes]
    assert len({tuple(np.round(o, 6)) for o in firsts}) == len(firsts)
    print(f"\nactor kill: counted by the dead process {dead['actor_steps']:.0f}, recorded {recorded_by_dead}; "
          f"lost {dead['actor_steps'] - recorded_by_dead:.0f} steps")


def test_a_killed_learner_goes_on_from_its_newest_checkpoint(tmp_path):
    from launch.rundir import checkpoints

    def ready(run_dir):
        steps = checkpoints.list_steps(run_dir)
        return bool(steps) and counted(run_dir).get("learner_steps", 0) >= steps[-1] + 30

    run_dir, output, killed_at, at_kill = kill_mid_run(tmp_path, "learner/0", ready)
    summary = assert_restarted_once(run_dir, output, "learner/0", killed_at)
    assert_counts_add_up(run_dir, summary)
    assert_final_checkpoint_loads(run_dir, summary)
    log = log_of(run_dir, "learner/0")
    before_kill, after = log.split("learner: restarted from checkpoint ")
    restored = int(after.split("(learner step ")[1].split(")")[0])
    # The newest checkpoint when it died; its steps after that checkpoint are lost.
    assert f"checkpoints/{restored} (periodic)" in before_kill and 0 < restored <= at_kill["learner_steps"]
    assert f"checkpoints/{restored + 100} (periodic)" not in before_kill
    # It went on from there: its next checkpoint is the checkpoint's step + 100.
    assert after.split("learner: checkpoint ")[1].split(" (")[0].endswith(f"checkpoints/{restored + 100}")
    assert summary["learner_steps"] > restored + 100
    print(f"\nlearner kill: restored step {restored}; lost {at_kill['learner_steps'] - restored:.0f}+ learner steps")


def test_a_killed_replay_server_is_refilled_and_everyone_reconnects(tmp_path):
    run_dir, output, killed_at, at_kill = kill_mid_run(
        tmp_path, "replay/0", lambda run_dir: counted(run_dir).get("actor_steps", 0) >= 2000)
    summary = assert_restarted_once(run_dir, output, "replay/0", killed_at)
    assert_counts_add_up(run_dir, summary)
    assert_final_checkpoint_loads(run_dir, summary)
    log = log_of(run_dir, "replay/0")
    refilled = int(log.split("replay: restarted and refilled with ")[1].split(" recorded")[0].replace(",", ""))
    assert refilled >= 1000
    # Actors wrote to the new server and the learner sampled it: both went on after the kill.
    assert summary["env_steps"] >= at_kill["actor_steps"] + 2000
    assert summary["learner_steps"] >= at_kill["learner_steps"] + 200
    print(f"\nreplay kill: refilled with {refilled} transitions")


def test_a_killed_counter_comes_back_with_its_totals_and_loses_none(tmp_path):
    run_dir, output, killed_at, at_kill = kill_mid_run(
        tmp_path, "counter/0", lambda run_dir: counted(run_dir).get("actor_steps", 0) >= 2000)
    summary = assert_restarted_once(run_dir, output, "counter/0", killed_at)  # recorded by the restarted counter
    assert_counts_add_up(run_dir, summary)
    assert_final_checkpoint_loads(run_dir, summary)
    assert "counter: restarted from " in log_of(run_dir, "counter/0")
    # Every step each actor took is in the totals once: the actors sent their totals again.
    actors = [read(run_dir, f"actor_{i}.json")["actor_steps"] for i in range(2)]
    assert summary["env_steps"] == sum(actors) >= at_kill["actor_steps"]


def test_a_node_that_keeps_dying_stops_the_run_naming_it(tmp_path):
    run_dir = str(tmp_path / "run")
    before = set(psutil.pids())
    launcher = subprocess.Popen(
        train_command(run_dir, "--max_env_steps=100000000", "--launch_type=local_mp",
                      "--set=experiment.max_restarts_per_node=1"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Killed once the learner trains: a stop while it is still starting is another case.
        wait_for(lambda: learner_has_updated(run_dir), 300, "the learner's first metrics row past step 0")
        for attempt in (0, 1):
            wait_for(lambda: node_process(run_dir, "evaluator/0", attempt) is not None, 120,
                     f"the evaluator's process, attempt {attempt}")
            node_process(run_dir, "evaluator/0", attempt).send_signal(signal.SIGKILL)
        output, _ = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 1, output[-4000:]
    log = os.path.join(run_dir, "logs", "evaluator", "0")
    message = f"node evaluator/0 died 2 times (last: signal 9 (SIGKILL)), past its budget of 1 restarts; its log: {log}"
    assert f"error: {message}" in output
    summary = read(run_dir, "summary.json")
    assert summary["stop_reason"] == message and not summary["reached_max_env_steps"]
    assert [record["restarted"] for record in restarts(run_dir)] == [True, False]
    assert_no_orphans(before)


def test_a_learner_whose_updates_keep_coming_out_non_finite_stops_the_run_with_one_error(tmp_path):
    """A learning rate of 1e30: after the first update every loss is inf or NaN. The updates are
    skipped, and 5 in a row stop the run: no restart (no restart mends it), the message points
    at the metrics, and the last good state is saved."""
    from launch.rundir import checkpoints

    run_dir = str(tmp_path / "run")
    before = set(psutil.pids())
    result = subprocess.run(
        train_command(run_dir, "--max_env_steps=100000000", "--launch_type=local_mp",
                      "--set=learner.learning_rate=1e30", "--set=experiment.max_nonfinite_updates_in_a_row=5"),
        cwd=ROOT, capture_output=True, text=True, timeout=400)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-4000:]
    learner_csv = os.path.join(run_dir, "metrics", "learner.csv")
    assert "5 learner updates in a row had a NaN or inf loss or gradients" in output and learner_csv in output
    summary = read(run_dir, "summary.json")
    assert summary["stop_reason"].startswith("node learner/0: 5 learner updates in a row")
    assert summary["restarts"] == [] and restarts(run_dir) == []
    learner = read(run_dir, "learner.json")
    assert learner["skipped_updates"] >= 5
    checkpoint, damaged = checkpoints.load_latest(run_dir)  # the last good state, finite
    assert damaged == [] and checkpoint.step == learner["learner_steps"]
    assert all(np.all(np.isfinite(leaf)) for leaf in jax_leaves(checkpoint.state))
    assert_no_orphans(before)


def jax_leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)
