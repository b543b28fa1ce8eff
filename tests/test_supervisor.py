"""The supervisor's restart budget (launch.runtime.supervisor), with real child processes: a
node that dies in a fast loop stops after its budget; one that dies now and then, with each
death outside the window of the one before, is started again as often as it dies."""

import signal
import sys
import threading
import time

import pytest

from launch.runtime.supervisor import RestartBudget, RestartPolicy, Supervisor

# A node's process stand-in: lives `life_s`, then exits with 1 until the attempt given (the
# supervisor adds --attempt=K), where it ends well with 0.
_NODE = "import sys, time; time.sleep({life_s}); sys.exit(0 if int(sys.argv[-1].split('=')[1]) == {last} else 1)"
# A process that never ends by itself (a hung node; an srun waiting on a lost host, test_job_driver): only a
# signal ends it, however slow the machine.
WAITS_FOREVER = "import signal; signal.pause()"


def supervise(policy: RestartPolicy, life_s: float, last: int, next_attempt=lambda attempt: attempt):
    """Runs a supervisor of the stand-in node to its end: its exit code, its records by attempt, seconds."""
    records = []
    supervisor = Supervisor([sys.executable, "-c", _NODE.format(life_s=life_s, last=last)], "actor/1", policy,
                            stopping=lambda: False, report=records.append, log="RUN/logs/actor/1",
                            next_attempt=next_attempt)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)}
    start = time.time()
    try:
        code = supervisor.run()  # takes the signals, to hand them to its child
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return code, sorted(records, key=lambda record: record["attempt"]), time.time() - start


def test_a_node_dying_in_a_fast_loop_stops_once_past_its_restarts_in_the_window():
    code, records, _ = supervise(RestartPolicy(max_restarts=2, window_s=600.0), life_s=0.0, last=100)
    assert code == 1
    assert [record["restarted"] for record in records] == [True, True, False]
    assert records[-1]["message"] == ("node actor/1 died 3 times within 10 minutes (last: exit code 1), past its "
                                     "budget of 2 restarts per 10 minutes; its log: RUN/logs/actor/1")


def test_a_node_dying_now_and_then_is_restarted_past_the_budget_of_one_window():
    """Each child lives 1 s and waits 1 s (the supervisor's restart delay) before the next
    starts: deaths are at least 2 s apart, outside a 1.5 s window however loaded the machine.
    One restart per window then allows all four; over the whole run it allows one."""
    code, records, took_s = supervise(RestartPolicy(max_restarts=1, window_s=1.5), life_s=1.0, last=4)
    assert code == 0 and [record["restarted"] for record in records] == [True] * 4
    assert [record["attempt"] for record in records] == [0, 1, 2, 3] and took_s >= 4 * 2.0
    code, records, _ = supervise(RestartPolicy(max_restarts=1), life_s=1.0, last=4)
    assert code == 1 and [record["restarted"] for record in records] == [True, False]
    assert "died 2 times (last: exit code 1), past its budget of 1 restart;" in records[-1]["message"]


def test_a_restart_takes_an_attempt_past_a_newer_process_of_the_node_elsewhere():
    """After its child's death the supervisor asks for the restart's number (the counter's
    `next_attempt`): where a newer process of the node registered meanwhile (attempt 4, started
    elsewhere while this host was cut off), the restart is attempt 5, so that the counter ends
    the other copy instead of leaving two alike."""
    elsewhere = {"newest": 4}
    code, records, _ = supervise(RestartPolicy(max_restarts=3), life_s=0.0, last=6,
                                 next_attempt=lambda attempt: max(attempt, elsewhere["newest"] + 1))
    assert code == 0 and [record["attempt"] for record in records] == [0, 5]


def test_the_budget_counts_only_the_restarts_inside_the_window():
    budget = RestartBudget(RestartPolicy(max_restarts=2, window_s=60.0))
    for now in (0.0, 10.0):
        assert budget.allows(now)
        budget.spend(now)
    assert not budget.allows(59.0)  # both restarts inside the last minute
    assert budget.allows(60.0) and budget.used(60.0) == 1  # the first has left the window
    assert RestartPolicy.from_json(RestartPolicy(3, 3600.0).to_json()) == RestartPolicy(3, 3600.0)
    assert RestartPolicy.from_json(RestartPolicy(3).to_json()) == RestartPolicy(3)  # JSON has no infinity
    with pytest.raises(ValueError, match="window_s > 0"):
        RestartPolicy(3, 0.0)


def test_a_stop_asked_twice_is_asked_of_the_counter_once_and_never_forces_the_processes():
    """The job's clock may ask for the stop more than once: the watch asks the counter once, and
    waits for the nodes to stop themselves until force_after_s, as at one Ctrl-C (a second
    Ctrl-C or SIGTERM, a person's, would end them at once)."""
    import subprocess

    from launch.runtime.watch import LaunchWatch

    node = subprocess.Popen([sys.executable, "-c", WAITS_FOREVER])
    asked, forced = [], []

    def request_stop(reason):
        asked.append(reason)
        return True

    def terminate(force):
        forced.append(force)
        node.kill()

    try:
        watch = LaunchWatch({"SLURM step actor": node}, request_stop, terminate, force_after_s=3.0, interval_s=0.05)
        watch.stop_soon("the SLURM job's time limit is near (29 s left)")
        watch.stop_soon("the SLURM job's time limit is near (SIGUSR1 from SLURM)")
        start = time.time()
        codes = watch.run()  # the node never stops by itself: ended by force after force_after_s, once
    finally:
        node.kill()
        node.wait()
    assert asked == ["the SLURM job's time limit is near (29 s left)"] and watch.stop_reason == asked[0]
    assert forced == [True] and codes == {"SLURM step actor": -signal.SIGKILL}
    assert 3.0 <= time.time() - start < 10.0


def test_a_process_ending_as_replaced_is_neither_a_failure_nor_a_stop():
    """A node (or a step) that a newer process of it replaced ends with SUPERSEDED_EXIT_CODE:
    the watch goes on with the rest, asks no stop, and the launch does not count it failed."""
    import subprocess

    from launch.faults import SUPERSEDED_EXIT_CODE
    from launch.runtime.watch import LaunchWatch, failures

    replaced = subprocess.Popen([sys.executable, "-c", f"import sys; sys.exit({SUPERSEDED_EXIT_CODE})"])
    # The other node runs until the replaced one has ended: the watch sees that end while it runs.
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    threading.Thread(target=lambda: (replaced.wait(), other.stdin.close()), daemon=True).start()
    asked = []
    try:
        codes = LaunchWatch({"node actor/1": replaced, "node actor/0": other}, lambda reason: asked.append(reason),
                            lambda force: None, interval_s=0.05).run()
    finally:
        for process in (replaced, other):
            process.kill()
            process.wait()
    assert codes == {"node actor/1": SUPERSEDED_EXIT_CODE, "node actor/0": 0} and asked == []
    assert failures(codes) == {} and failures({"node actor/0": 1, "node actor/1": None}) == {"node actor/0": 1}


def test_a_node_process_replaced_while_frozen_ends_at_once_when_it_wakes_and_is_not_restarted(tmp_path):
    """What a healed network partition looks like to a stale copy: the evaluator's process is
    frozen (SIGSTOP: it hears nothing, as across a cut link) while a newer process of its node
    registers with the counter (as one the job started elsewhere does). Woken, the old copy
    hears from the counter that it was replaced and ends with SUPERSEDED_EXIT_CODE, without its
    final save; its supervisor does not start it again. Real counter and entry processes."""
    import contextlib
    import subprocess

    import courier
    import psutil

    import environments
    from experiments import configs
    from launch.faults import SUPERSEDED_EXIT_CODE
    from launch.program import make_program
    from launch.runtime import launch_files
    from launch.runtime.entry import wait_for_coordinator
    from test_program import ROOT, wait_for

    config = configs.make_experiment_config(agent="mpo", task="cartpole:swingup", run_dir=str(tmp_path / "run"),
                                            preset="debug", num_actors=1)
    launch_dir = str(tmp_path / "run" / "launches" / "0")
    launch_files.write_program(make_program(config, environments.environment_spec(config.environment)), launch_dir)
    entry = [sys.executable, "-m", "launch.runtime.entry", f"--launch_dir={launch_dir}", "--host=127.0.0.1"]
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("counter", "evaluator")}
    counter = subprocess.Popen(entry + ["--node=counter/0"], cwd=ROOT, stdout=logs["counter"], stderr=subprocess.STDOUT)
    started = [counter]
    try:
        address = wait_for_coordinator(launch_dir, 120.0)
        supervisor = subprocess.Popen(entry + ["--node=evaluator/0", f"--coordinator={address}"], cwd=ROOT,
                                      stdout=logs["evaluator"], stderr=subprocess.STDOUT)
        started.append(supervisor)
        client = courier.Client(address, call_timeout=5.0)
        wait_for(lambda: client.lookup_address("evaluator/0") is not None, 120, "the evaluator to register")
        [node] = psutil.Process(supervisor.pid).children()
        started.append(node)
        assert "--attempt=0" in node.cmdline()
        node.send_signal(signal.SIGSTOP)
        client.register_address("evaluator/0", "127.0.0.2:1", 1)  # the newer process, elsewhere
        node.send_signal(signal.SIGCONT)
        node.wait(timeout=30)  # not this process's child: its code is the supervisor's, next
        assert supervisor.wait(timeout=30) == SUPERSEDED_EXIT_CODE
        assert client.stop_reason() is None  # the program goes on
        client.request_stop("the test is done")
        assert counter.wait(timeout=60) == 0
    finally:
        for process in started:  # by id, whatever happened above
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        for log in logs.values():
            log.close()
    output = (tmp_path / "evaluator.log").read_text()
    assert ("relay node evaluator/0: superseded: evaluator/0 runs as a newer process (attempt 1; this is attempt 0); "
            "this process ends now, without a final save or report") in output
    assert "relay supervisor: node evaluator/0 was replaced by a newer process elsewhere; not started again" in output
    assert "--attempt=1" not in output and "restart 1" not in output
