"""A lost supervisor (local_mp): what losing a node's host looks like on one machine. The
supervisors of actor/1, the learner, the replay server and the counter are SIGKILLed at once
mid-run (their nodes die with them); the launcher starts each again at the same port, each
node goes on as a restarted one, and the run ends at max_env_steps with exit 0 and its counts,
summary and final checkpoint right."""

import os
import signal
import subprocess
import time

import psutil
import pytest

from test_faults import (CHECKPOINT_EVERY, actor_senders, assert_counts_add_up, assert_final_checkpoint_loads,
                         counted, counter_state, log_of, restarts)
from test_program import ROOT, assert_no_orphans, read, train_command, wait_for

pytestmark = pytest.mark.xdist_group("programs")

LOST = ("actor/1", "learner/0", "replay/0", "counter/0")
MAX_ENV_STEPS = 6000


def supervisor_process(run_dir, node):
    """The node's `launch.runtime.entry` process that has no --attempt: its supervisor."""
    launch_dir = os.path.join(run_dir, "launches", "0")
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if (f"--launch_dir={launch_dir}" in cmdline and f"--node={node}" in cmdline
                and not any(arg.startswith("--attempt=") for arg in cmdline)):
            return process
    return None


def test_lost_supervisors_are_started_again_and_the_run_ends_at_its_limit(tmp_path):
    from launch.rundir import checkpoints

    run_dir = str(tmp_path / "run")
    before = set(psutil.pids())
    launcher = subprocess.Popen(
        train_command(run_dir, f"--max_env_steps={MAX_ENV_STEPS}", "--launch_type=local_mp", CHECKPOINT_EVERY),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: counted(run_dir).get("actor_steps", 0) >= 2000 and checkpoints.list_steps(run_dir),
                 300, "2,000 env steps and a checkpoint")
        supervisors = {node: supervisor_process(run_dir, node) for node in LOST}
        children = {node: supervisor.children() for node, supervisor in supervisors.items()}
        at_kill = counted(run_dir)
        for supervisor in supervisors.values():
            supervisor.send_signal(signal.SIGKILL)
        for node, supervisor in supervisors.items():  # its node dies with it
            supervisor.wait(timeout=30)
            psutil.wait_procs(children[node], timeout=30)
        killed_at, checkpoints_at_kill = time.time(), checkpoints.list_steps(run_dir)
        output, _ = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            print(launcher.communicate()[0][-6000:])
    assert launcher.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    assert_no_orphans(before, run_dir)

    summary = read(run_dir, "summary.json")
    assert summary["reached_max_env_steps"] and summary["env_steps"] >= MAX_ENV_STEPS
    assert summary["env_steps"] >= at_kill["actor_steps"] + 3000  # the run went on well past the loss
    relaunched = [record for record in restarts(run_dir) if record.get("supervisor")]
    assert sorted(record["node"] for record in relaunched) == sorted(LOST)
    for record in relaunched:
        assert record["cause"] == "its supervisor ended (signal 9 (SIGKILL))" and record["restarted"]
        assert killed_at - 30 <= record["time"] <= killed_at + 30
        assert f"restart: node {record['node']}: its supervisor ended (signal 9 (SIGKILL)); started again" in output
    # Each node went on as a restarted one: attempt 1, after the attempt 0 its supervisor ran.
    assert {node: counter_state(run_dir)["attempts"][node] for node in LOST if node != "counter/0"} == {
        "actor/1": 1, "learner/0": 1, "replay/0": 1}
    assert "counter: restarted from " in log_of(run_dir, "counter/0")
    refilled = log_of(run_dir, "replay/0").split("replay: restarted and refilled with ")[1].split(" recorded")[0]
    assert int(refilled.replace(",", "")) >= 1000
    _, after = log_of(run_dir, "learner/0").split("learner: restarted from checkpoint ")
    restored = int(after.split("(learner step ")[1].split(")")[0])
    assert restored == checkpoints_at_kill[-1] and "learner: checkpoint " in after
    # Actor 1's two processes each counted their own steps, once; the totals are the summary's.
    senders = [totals["actor_steps"] for totals in actor_senders(run_dir, "actor_1")]
    assert len(senders) == 2 and min(senders) > 0
    actors = [read(run_dir, f"actor_{i}.json")["actor_steps"] for i in range(2)]
    assert actors[1] in senders and summary["env_steps"] == actors[0] + sum(senders)
    assert_counts_add_up(run_dir, summary)
    assert_final_checkpoint_loads(run_dir, summary)
