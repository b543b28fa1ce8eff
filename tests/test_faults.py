"""Node processes killed mid-run (local_mp): each supervisor starts its node again and the run
goes on; a node that keeps dying stops the run, naming it.

One program for all of it (`killed_run`): the processes of actor/1, learner/0, replay/0 and
counter/0 are SIGKILLed together, then, once all four are back at work, the evaluator's until it
is past its budget of restarts, which ends the run. Each test checks one node's part.
"""

import json
import os
import signal
import subprocess
import time

import numpy as np
import psutil
import pytest

from test_program import ROOT, assert_no_orphans, read, train_command, wait_for

# Whole programs, one at a time in one of the suite's two processes (setup.cfg): the other runs
# the tests that need no program of their own.
pytestmark = pytest.mark.xdist_group("programs")

CHECKPOINT_EVERY = "--set=experiment.checkpoint_every_learner_steps=100"
BUDGET = 3  # experiment.max_restarts_per_node's default (within restart_window_minutes, 60)
# Killed together, as when they share a host that loses them: each recovers while the others do.
LOST_AT_ONCE = ("actor/1", "learner/0", "replay/0", "counter/0")


def node_process(run_dir, node, attempt=0):
    """The node's own process (its supervisor's child), by its command line."""
    launch_dir = os.path.join(run_dir, "launches", "0")
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if (f"--launch_dir={launch_dir}" in cmdline and f"--node={node}" in cmdline
                and f"--attempt={attempt}" in cmdline):
            return process
    return None


def counter_state(run_dir, launch_index=0):
    """The counter's state in launch `launch_index` as it last saved it (every 0.5 s); {} while there is none."""
    path = os.path.join(run_dir, "launches", str(launch_index), "counter_state.json")
    try:
        with open(path) as file:
            return json.load(file)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def counted(run_dir, launch_index=0):
    """The counter's totals in launch `launch_index` (those it resumed from aside), as it last saved them."""
    state = counter_state(run_dir, launch_index)
    totals = dict(state.get("values", {}))
    for sender in state.get("by_sender", {}).values():
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
    try:
        with open(os.path.join(run_dir, "logs", *node.split("/"))) as file:
            return file.read()
    except FileNotFoundError:
        return ""


def actor_senders(run_dir, actor):
    """Each process of `actor` ("actor_1") that reported to the counter: its totals."""
    return [totals for sender, totals in counter_state(run_dir).get("by_sender", {}).items()
            if sender.startswith(f"{actor}-")]


def learner_ready_for_the_kill(run_dir):
    from launch.rundir import checkpoints

    steps = checkpoints.list_steps(run_dir)
    return bool(steps) and counted(run_dir).get("learner_steps", 0) >= steps[-1] + 30


def learner_back_at_work(run_dir):
    """Restarted from a checkpoint, and saved one more after it: it trained on."""
    after = log_of(run_dir, "learner/0").partition("learner: restarted from checkpoint ")[2]
    return "learner: checkpoint " in after


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """(run_dir, launcher output, node -> [(time of each kill, the counter's totals then, the run's
    finished checkpoints then)])."""
    run_dir = str(tmp_path_factory.mktemp("faults") / "run")
    before = set(psutil.pids())
    launcher = subprocess.Popen(
        train_command(run_dir, "--max_env_steps=100000000", "--launch_type=local_mp", CHECKPOINT_EVERY),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    kills = {}
    from launch.rundir import checkpoints

    def kill(node, attempt=0):
        wait_for(lambda: node_process(run_dir, node, attempt) is not None, 120, f"{node}'s process, attempt {attempt}")
        process = node_process(run_dir, node, attempt)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)  # gone, so the checkpoints listed next are all it wrote
        kills.setdefault(node, []).append((time.time(), counted(run_dir), checkpoints.list_steps(run_dir)))

    try:
        wait_for(lambda: counted(run_dir).get("actor_steps", 0) >= 2500 and learner_ready_for_the_kill(run_dir),
                 300, "2,500 env steps, a checkpoint and 30 learner steps past it")
        for node in LOST_AT_ONCE:
            kill(node)
        at_kill = kills["counter/0"][0][1]
        wait_for(lambda: sum(totals.get("actor_steps", 0) > 0 for totals in actor_senders(run_dir, "actor_1")) == 2
                 and learner_back_at_work(run_dir) and "replay: restarted and refilled with" in log_of(run_dir, "replay/0")
                 and "counter: restarted from" in log_of(run_dir, "counter/0")
                 and counted(run_dir).get("actor_steps", 0) >= at_kill["actor_steps"] + 2000
                 and counted(run_dir).get("learner_steps", 0) >= at_kill["learner_steps"] + 200,
                 180, "every killed node back at work, and 2,000 env steps and 200 learner steps more")
        for attempt in range(BUDGET + 1):  # the last one is past the budget: the run stops
            kill("evaluator/0", attempt)
        output, _ = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            print(launcher.communicate()[0][-6000:])
    assert launcher.returncode == 1, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    assert_no_orphans(before, run_dir)
    return run_dir, output, kills


def assert_restarted_once(run_dir, output, node, killed_at):
    [record] = [record for record in restarts(run_dir) if record["node"] == node]
    assert record["cause"] == "signal 9 (SIGKILL)" and record["restarted"]
    assert record["attempt"] == 0 and killed_at - 1 <= record["time"] <= killed_at + 30
    assert f"restart: node {node} died (signal 9 (SIGKILL))" in output  # on the launcher's terminal
    assert {"node": node, "cause": "signal 9 (SIGKILL)", "restarted": True} in read(run_dir, "summary.json")["restarts"]


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


def test_a_killed_actor_is_restarted_with_a_fresh_seed_and_nothing_counted_twice(killed_run):
    run_dir, output, kills = killed_run
    [(killed_at, _, _)] = kills["actor/1"]
    assert_restarted_once(run_dir, output, "actor/1", killed_at)
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


def test_a_killed_learner_goes_on_from_its_newest_checkpoint(killed_run):
    run_dir, output, kills = killed_run
    [(killed_at, _, checkpoints_at_kill)] = kills["learner/0"]
    assert_restarted_once(run_dir, output, "learner/0", killed_at)
    log = log_of(run_dir, "learner/0")
    _, after = log.split("learner: restarted from checkpoint ")
    restored = int(after.split("(learner step ")[1].split(")")[0])
    # The newest checkpoint the dead process finished; its steps after it are lost. Neither the
    # counter's learner steps (the learner sends them now and then: 6,500 restored against 6,430
    # counted was seen) nor the dead process's log (a kill between a save and its log line: 4,700
    # restored, 4,600 the last logged) bound it; the checkpoints on disk once it was gone do.
    assert restored > 0 and restored == checkpoints_at_kill[-1]
    # It went on from there: its next checkpoint is the checkpoint's step + 100.
    assert after.split("learner: checkpoint ")[1].split(" (")[0].endswith(f"checkpoints/{restored + 100}")
    assert read(run_dir, "summary.json")["learner_steps"] > restored + 100
    print(f"\nlearner kill: restored step {restored}")


def test_a_killed_replay_server_is_refilled_and_everyone_reconnects(killed_run):
    run_dir, output, kills = killed_run
    [(killed_at, at_kill, _)] = kills["replay/0"]
    assert_restarted_once(run_dir, output, "replay/0", killed_at)
    log = log_of(run_dir, "replay/0")
    refilled = int(log.split("replay: restarted and refilled with ")[1].split(" recorded")[0].replace(",", ""))
    # What was on disk when it came back: the steps recorded before the kill, less the last
    # ~2 s of each actor's (recorded only once counted, and the counter died too).
    assert refilled >= 100
    # Actors wrote to the new server and the learner sampled it: both went on after the kill.
    summary = read(run_dir, "summary.json")
    assert summary["env_steps"] >= at_kill["actor_steps"] + 2000
    assert summary["learner_steps"] >= at_kill["learner_steps"] + 200
    print(f"\nreplay kill: refilled with {refilled} transitions")


def test_a_killed_counter_comes_back_with_its_totals_and_loses_none(killed_run):
    run_dir, output, kills = killed_run
    [(killed_at, at_kill, _)] = kills["counter/0"]
    assert_restarted_once(run_dir, output, "counter/0", killed_at)  # recorded by the restarted counter
    assert "counter: restarted from " in log_of(run_dir, "counter/0")
    # Every step each actor process took is in the totals once (the actors sent their totals again):
    # the two actors' own totals at the end, and what actor 1's killed process had counted.
    actors = [read(run_dir, f"actor_{i}.json")["actor_steps"] for i in range(2)]
    [killed_actor] = [totals["actor_steps"] for totals in actor_senders(run_dir, "actor_1") if totals["actor_steps"] != actors[1]]
    assert read(run_dir, "summary.json")["env_steps"] == sum(actors) + killed_actor >= at_kill["actor_steps"]


def test_a_node_that_keeps_dying_stops_the_run_naming_it(killed_run):
    run_dir, output, _ = killed_run
    log = os.path.join(run_dir, "logs", "evaluator", "0")
    message = (f"node evaluator/0 died {BUDGET + 1} times within 60 minutes (last: signal 9 (SIGKILL)), past its "
               f"budget of {BUDGET} restarts per 60 minutes; its log: {log}")
    assert f"error: {message}" in output
    summary = read(run_dir, "summary.json")
    assert summary["stop_reason"] == message and not summary["reached_max_env_steps"]
    assert [record["restarted"] for record in restarts(run_dir) if record["node"] == "evaluator/0"] == [True] * BUDGET + [False]
    # In the order the counter took them: a restarted counter's own record may come after the next one.
    assert sorted(record["node"] for record in summary["restarts"]) == sorted(
        ["actor/1", "learner/0", "replay/0", "counter/0"] + ["evaluator/0"] * (BUDGET + 1))


def test_after_every_restart_the_counts_add_up_and_the_final_checkpoint_loads(killed_run):
    run_dir, _, _ = killed_run
    summary = read(run_dir, "summary.json")
    assert_counts_add_up(run_dir, summary)
    assert_final_checkpoint_loads(run_dir, summary)


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
    assert_no_orphans(before, run_dir)


def jax_leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)
