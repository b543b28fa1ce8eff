"""The SLURM job driver's own parts (launch.runtime.slurm_watch), without a cluster: its clock for the
job's time limit, and how it finds a step lost though its srun still runs. Real processes
stand in for srun; the counter's answers are given."""

import signal
import subprocess
import sys
import threading
import time

from launch.runtime.slurm_watch import LOST_STEP_CODE, Step, TimeLimitWatch
from test_supervisor import WAITS_FOREVER


def test_the_job_stops_its_program_before_its_time_limit_and_slurms_early_warning_only_rereads_it():
    def watched(time_left, stop_before_s, warn_after_s=None):
        """(the stop reasons asked, seconds until the first) of a watch run for at most 5 s."""
        asked, start = [], time.time()
        watch = TimeLimitWatch(time_left, stop_before_s, lambda reason: asked.append((reason, time.time() - start)),
                               check_every_s=10.0)
        thread = threading.Thread(target=watch.run)
        thread.start()
        if warn_after_s is not None:
            time.sleep(warn_after_s)
            watch.warn()
        thread.join(5.0)
        watch.close()
        thread.join()
        return asked

    end = time.time() + 31.5
    [(reason, after)] = watched(lambda: end - time.time(), stop_before_s=30.0)
    assert reason.startswith("the SLURM job's time limit is near (") and 1.0 <= after < 10.0
    # SLURM's warning a minute early: the limit is read again, and the program runs on.
    assert watched(lambda: 3600.0, stop_before_s=30.0, warn_after_s=0.5) == []
    # Without squeue's answer the warning is all there is: the program stops at it.
    [(reason, after)] = watched(lambda: None, stop_before_s=30.0, warn_after_s=0.5)
    assert reason == "the SLURM job's time limit is near (SIGUSR1 from SLURM)" and 0.5 <= after < 10.0


def test_a_step_whose_nodes_all_fell_silent_is_lost_and_its_srun_ended():
    """srun waits on for a host that is gone; the counter has heard nothing from the step's nodes
    for lost_after_s: the step is lost, its srun ended. A node still starting, or one that the
    counter heard from recently, keeps the step."""
    heard = {}
    srun = subprocess.Popen([sys.executable, "-c", WAITS_FOREVER])  # srun, waiting on
    try:
        step = Step(srun, ["actor/0", "actor/1"], lambda nodes: {node: heard.get(node) for node in nodes},
                    lost_after_s=1.0, startup_s=30.0, check_every_s=0.0)
        assert step.poll() is None  # never heard: still starting
        time.sleep(1.5)  # at least: the step runs longer than the silences given below
        heard.update({"actor/0": 1.2, "actor/1": 0.3})  # actor/1 asked 0.3 s ago
        assert step.poll() is None and step.lost_after_s is None
        heard["actor/1"] = 1.2  # both silent past lost_after_s
        assert step.poll() == LOST_STEP_CODE and step.lost_after_s == 1.0
        assert srun.poll() is not None  # ended (by SIGINTs: srun would end its tasks with it)
    finally:
        srun.kill()
        srun.wait()
    # The counter not answering is not silence; an srun that ends is the step's end, as it says.
    srun = subprocess.Popen([sys.executable, "-c", WAITS_FOREVER])
    try:
        step = Step(srun, ["learner/0"], lambda nodes: None, lost_after_s=0.1, startup_s=0.0, check_every_s=0.0)
        assert step.poll() is None
        srun.terminate()
        srun.wait()
        assert step.poll() == -signal.SIGTERM
    finally:
        srun.kill()
        srun.wait()


def test_a_step_that_lost_some_of_its_nodes_moves_them_and_ends_with_the_program():
    """One host of a step's several is lost: its nodes fall silent while the others are heard.
    They are offered to be moved (started elsewhere), the step runs on with the rest; its srun,
    waiting on for the lost host's tasks, is ended once the program has ended. Refused (the
    program stops, or past their budget), the step is lost whole, and says it must not be
    started again whole."""
    heard, moved, ended = {}, [], []

    def step_over(srun, allow):
        return Step(srun, ["actor/0", "actor/1", "actor/2"], lambda nodes: {node: heard.get(node) for node in nodes},
                    lost_after_s=1.0, startup_s=0.0, check_every_s=0.0,
                    move_nodes=lambda nodes: allow and not moved.append(list(nodes)), program_ended=lambda: bool(ended),
                    end_grace_s=0.5)

    srun = subprocess.Popen([sys.executable, "-c", WAITS_FOREVER])
    try:
        step = step_over(srun, allow=True)
        time.sleep(1.5)
        heard.update({"actor/0": 0.2, "actor/1": 1.3, "actor/2": 0.2})
        assert step.poll() is None and moved == [["actor/1"]]
        assert step.nodes == ["actor/0", "actor/2"] and step.moved == ["actor/1"]
        assert step.poll() is None and moved == [["actor/1"]]  # offered once
        ended.append(True)
        assert step.poll() is None  # its nodes' last writes get a grace
        time.sleep(0.6)
        assert step.poll() == 0 and srun.poll() is not None and not step.refused
    finally:
        srun.kill()
        srun.wait()
    moved.clear()
    srun = subprocess.Popen([sys.executable, "-c", WAITS_FOREVER])
    try:
        step = step_over(srun, allow=False)
        time.sleep(1.5)
        assert step.poll() == LOST_STEP_CODE and step.refused and step.lost_after_s == 1.0
    finally:
        srun.kill()
        srun.wait()


def test_nodes_of_a_slurm_job_wait_for_a_lost_counter_as_long_as_the_job_takes_to_bring_it_back(tmp_path):
    """On one machine or with hosts a lost counter is back in seconds; in a SLURM job it is found
    lost only after lost_after_s, then starts as a new step: its nodes wait that long more."""
    import json

    from launch.runtime import entry

    assert entry.counter_patience_s(str(tmp_path)) == (60.0, 30.0)  # no job: local_mp, hosts
    spec = {"components": [], "slurm": {"lost_after_s": 30.0, "heterogeneous": True}}
    (tmp_path / "cluster.json").write_text(json.dumps(spec))
    assert entry.counter_patience_s(str(tmp_path)) == (60.0, 30.0)  # a spec, but no SLURM job (hosts)
    (tmp_path / "job.json").write_text("{}")
    assert entry.counter_patience_s(str(tmp_path)) == (60.0 + 30.0 + 120.0, 30.0 + 30.0 + 120.0)
    spec["slurm"]["heterogeneous"] = False  # one job per component: nothing starts a lost counter again
    (tmp_path / "cluster.json").write_text(json.dumps(spec))
    assert entry.counter_patience_s(str(tmp_path)) == (60.0, 30.0)
