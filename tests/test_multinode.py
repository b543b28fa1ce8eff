"""One Relay program across hosts: a real SLURM cluster and the no-scheduler launch, each host a
network namespace on this machine (experiments/testbed/).

Placement: replay, counter, monitor and evaluator on h1, the learner on h2, two actors on h3
(the tests of lost hosts spread the actors over h3 and h4). Skipped, with the reason, where
namespaces or SLURM/munge are unavailable.
"""

import contextlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import psutil
import pytest

from experiments.testbed import netns_hosts, slurm_cluster
from test_faults import counted
from test_program import (ROOT, assert_experience_recorded, assert_final_checkpoint, assert_no_orphans,
                          learner_has_updated, read, train_command, train_main, wait_for)

# Whole programs, one at a time in one of the suite's two processes (setup.cfg): the other runs
# the tests that need no program of their own.
pytestmark = pytest.mark.xdist_group("programs")

PLACEMENT = ((("replay", "counter", "monitor", "evaluator"), "h1"), (("learner",), "h2"), (("actor",), "h3"))


@pytest.fixture(scope="module")
def hosts():
    reason = netns_hosts.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with netns_hosts.HostNamespaces(["h1", "h2", "h3", "h4"]) as namespaces:
        yield namespaces


@pytest.fixture(scope="module")
def cluster(hosts, tmp_path_factory):
    """One SLURM cluster for the module's jobs (each test's run has a directory of its own)."""
    reason = slurm_cluster.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with slurm_cluster.SlurmCluster(tmp_path_factory.mktemp("slurm"), hosts) as slurm:
        slurm.wait_ready(120)
        yield slurm


def write_spec(path: pathlib.Path, spec: dict) -> str:
    path.write_text(json.dumps(spec))
    return str(path)


def slurm_spec(tmp_path, heterogeneous=True):
    return write_spec(tmp_path / "cluster.json", {"components": [{"groups": list(groups)} for groups, _ in PLACEMENT],
                                                  "slurm": {"heterogeneous": heterogeneous}})


def hosts_spec(tmp_path, hosts):
    # A host's name is its namespace: the template enters it as `ssh {host}` would log in.
    return write_spec(tmp_path / "cluster.json", {
        "components": [{"groups": list(groups), "hosts": [{"name": hosts.netns_name(host), "address": hosts.hosts[host]}]}
                       for groups, host in PLACEMENT],
        "command_template": "nsenter --net=/run/netns/{host} --",
    })


def node_hosts(run_dir) -> dict:
    """Where each node ran: "group/index" -> the address it announced in its log."""
    placed = {}
    for log in pathlib.Path(run_dir, "logs").glob("*/*"):
        match = re.search(r"relay node (\S+) on (\S+) ", log.read_text(errors="replace"))
        if match:
            placed[match.group(1)] = match.group(2)
    return placed


def assert_placed_as_specified(run_dir, hosts):
    expected = {"replay/0": "h1", "counter/0": "h1", "monitor/0": "h1", "evaluator/0": "h1", "learner/0": "h2",
                "actor/0": "h3", "actor/1": "h3"}
    assert node_hosts(run_dir) == {node: hosts.hosts[host] for node, host in expected.items()}


def assert_progress_line_shown(output, max_env_steps):
    """The launcher's progress line, read from the counter: env steps past the limit, learner steps."""
    lines = re.findall(r"^env ([\d,]+)/" + f"{max_env_steps:,}" + r" \(.*\| learner ([\d,]+) ", output, re.MULTILINE)
    assert lines and int(lines[-1][0].replace(",", "")) >= max_env_steps and int(lines[-1][1].replace(",", "")) > 0, \
        output[-3000:]


def assert_accelerators_only_for_the_learner(run_dir):
    for log in pathlib.Path(run_dir, "logs").glob("*/*"):
        text = log.read_text(errors="replace")
        expected = "accelerators allowed" if log.parent.name == "learner" else "CPU only"
        assert f", {expected}" in text, f"{log}:\n{text[:2000]}"


def assert_logs_clean(run_dir, allowed=()):
    """No traceback in any node's log, and no final report missing but those `allowed` say."""
    for log in pathlib.Path(run_dir, "logs").glob("*/*"):
        text = log.read_text(errors="replace")
        missing = [line for line in text.splitlines() if "no final report" in line and not any(a in line for a in allowed)]
        assert "Traceback" not in text and not missing, f"{log}:\n{text[-3000:]}"


@contextlib.contextmanager
def launched_until_the_learner_updates(run_dir, *flags, env=None):
    """The launcher of a run without a step limit, once its learner has updated (so the final
    checkpoint is past step 0); killed at the end if still there. It runs with -X faulthandler
    (see communicate_or_dump)."""
    launcher = subprocess.Popen(
        [sys.executable, "-X", "faulthandler"] + train_command(run_dir, "--max_env_steps=100000000", *flags)[1:],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: learner_has_updated(run_dir), 300, "the learner's first metrics row past step 0")
        yield launcher
    finally:
        if launcher.poll() is None:
            launcher.kill()


def assert_stopped_cleanly_mid_run(run_dir, whole_actors=(0, 1)):
    """Every node returned: exact totals in the summary, a final checkpoint that loads, every step
    of the actors that were never restarted recorded, clean logs."""
    summary = read(run_dir, "summary.json")
    assert 0 < summary["env_steps"] == read(run_dir, "counts.json")["actor_steps"] and not summary["reached_max_env_steps"]
    assert summary["learner_steps"] == read(run_dir, "learner.json")["learner_steps"]
    assert_final_checkpoint(run_dir)
    assert_experience_recorded(run_dir, whole_actors)
    assert_logs_clean(run_dir)


def test_a_het_job_runs_across_three_hosts_restarts_a_killed_actor_there_and_stops_at_ctrl_c(cluster, hosts, tmp_path):
    """The heterogeneous job, followed by the launcher. Actor 1's process is SIGKILLed on h3 mid-job:
    its supervisor (the srun task) starts it again on h3. Then Ctrl-C of the launcher stops the
    program through the counter: every node returns, and the job ends COMPLETED."""
    from test_faults import actor_senders, node_process, restarts

    run_dir = str(tmp_path / "run")
    before = set(psutil.pids())
    with launched_until_the_learner_updates(run_dir, "--launch_type=slurm", f"--cluster={slurm_spec(tmp_path)}",
                                            env=cluster.env) as launcher:
        wait_for(lambda: counted(run_dir).get("actor_steps", 0) >= 1500, 300, "1,500 env steps")
        node_process(run_dir, "actor/1").send_signal(signal.SIGKILL)
        wait_for(lambda: sum(totals.get("actor_steps", 0) > 0 for totals in actor_senders(run_dir, "actor_1")) == 2,
                 180, "actor 1's new process to count steps")
        launcher.send_signal(signal.SIGINT)
        output = communicate_or_dump(launcher, timeout_s=60)  # the nodes' stop, then SLURM ends the job
    assert launcher.returncode == 0, output[-3000:] + cluster.log_tails()
    job_ids = pathlib.Path(run_dir, "launches", "0", "job_id").read_text().split()
    assert len(job_ids) == 1 and f"SLURM job {job_ids[0]}: COMPLETED" in output, output[-3000:]
    assert cluster.job_state(job_ids[0]) == "COMPLETED"  # stopped by the counter, not cancelled
    [record] = restarts(run_dir)
    assert record["node"] == "actor/1" and record["cause"] == "signal 9 (SIGKILL)" and record["restarted"]
    assert "restart: node actor/1 died (signal 9 (SIGKILL))" in output
    log = pathlib.Path(run_dir, "logs", "actor", "1").read_text(errors="replace")
    assert re.findall(r"relay node actor/1 on (\S+) ", log) == [hosts.hosts["h3"]] * 2  # again on its host
    # The job filled the spec's hosts in from SLURM's node lists, and every node ran where the spec said.
    spec = read(os.path.join(run_dir, "launches", "0"), "cluster.json")
    assert [[host["name"] for host in c["hosts"]] for c in spec["components"]] == [["h1"], ["h2"], ["h3"]]
    assert_placed_as_specified(run_dir, hosts)
    assert_accelerators_only_for_the_learner(run_dir)
    assert_stopped_cleanly_mid_run(run_dir, whole_actors=[0])
    assert_no_orphans(before, run_dir)


def test_jobs_one_per_component_run_detached_and_scancel_stops_every_node_cleanly(cluster, hosts, tmp_path):
    """Where a site forbids heterogeneous jobs: one job per component, submitted and left to run
    (--detach); `scancel` of them all mid-run stops every node as a stop does (final checkpoint,
    recordings, summary)."""
    from experiments import runs

    run_dir = str(tmp_path / "run")
    before = set(psutil.pids())
    result = subprocess.run(
        train_command(run_dir, "--max_env_steps=100000000", "--launch_type=slurm",
                      f"--cluster={slurm_spec(tmp_path, heterogeneous=False)}", "--detach"),
        cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "Detached." in result.stdout and "Finished" not in result.stdout, \
        result.stdout[-3000:] + result.stderr[-3000:]
    job_ids = pathlib.Path(run_dir, "launches", "0", "job_id").read_text().split()
    assert len(job_ids) == 3
    wait_for(lambda: learner_has_updated(run_dir), 300, "the learner's first metrics row past step 0")
    cluster.run(["scancel", *job_ids])
    # KillWait is 30 s: a node still running then is killed, and its final report would be missing.
    for job_id in job_ids:
        cluster.wait_job(job_id, ["CANCELLED"], timeout_s=90)
    wait_for(lambda: os.path.exists(os.path.join(run_dir, "summary.json")), 60, "the counter's summary")
    # Each job got the host SLURM chose for it, and its nodes ran there.
    for job_id, groups in zip(job_ids, [groups for groups, _ in PLACEMENT]):
        job_host = hosts.hosts[re.search(r" NodeList=(\S+)", cluster.job_info(job_id)).group(1)]
        placed = {node: address for node, address in node_hosts(run_dir).items() if node.split("/")[0] in groups}
        assert placed and set(placed.values()) == {job_host}
    assert_stopped_cleanly_mid_run(run_dir)
    # The runs index shows it like any run.
    [listed] = runs.find_runs(str(tmp_path))
    assert listed["env_steps"] == read(run_dir, "summary.json")["env_steps"] and listed["checkpoint"] is not None
    assert_no_orphans(before, run_dir)


def test_the_hosts_launch_runs_across_namespaces_and_moves_the_actor_of_a_host_that_no_longer_answers(hosts, tmp_path):
    """Each node where the spec puts it (actors on h3 and h4), accelerators for the learner only.
    Mid-run h3 stops answering (its login fails, as ssh to a lost host does) and every process of
    the run there is SIGKILLed: actor 0's supervisor is started again on h4, and the run ends at
    max_env_steps with exact counts, every step of actor 1 recorded, clean logs and a final
    checkpoint. (One run for both: the launch across namespaces is the same path.)"""
    run_dir, down = str(tmp_path / "run"), tmp_path / "down"
    down.mkdir()
    host = lambda name: {"name": hosts.netns_name(name), "address": hosts.hosts[name]}  # noqa: E731
    spec = write_spec(tmp_path / "cluster.json", {
        "components": [{"groups": ["replay", "counter", "monitor", "evaluator"], "hosts": [host("h1")]},
                       {"groups": ["learner"], "hosts": [host("h2")]},
                       {"groups": ["actor"], "hosts": [host("h3"), host("h4")]}],
        "command_template": f"test ! -e {down}/{{host}} && nsenter --net=/run/netns/{{host}} --"})
    before = set(psutil.pids())
    launcher = subprocess.Popen(train_command(run_dir, "--max_env_steps=8000", "--launch_type=hosts", f"--cluster={spec}"),
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: counted(run_dir, 0).get("actor_steps", 0) >= 1500, 300, "1,500 env steps")
        (down / hosts.netns_name("h3")).touch()
        victims = [psutil.Process(pid) for pid in hosts.namespace_pids("h3")
                   if any(f"--launch_dir={run_dir}" in arg for arg in psutil.Process(pid).cmdline())]
        assert len(victims) == 2  # actor 0's supervisor and its node
        for process in victims:
            process.send_signal(signal.SIGKILL)
        output = communicate_or_dump(launcher, timeout_s=400)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0, output[-3000:]
    for nodes, host in PLACEMENT[:2]:
        for node in nodes:
            assert served_on(run_dir, f"{node}/0") == [hosts.hosts[host]], node
    assert f"{hosts.netns_name('h3')} does not answer; node actor/0 moves to {hosts.netns_name('h4')}" in output
    assert served_on(run_dir, "actor/0") == [hosts.hosts["h3"], hosts.hosts["h4"]]
    assert served_on(run_dir, "actor/1") == [hosts.hosts["h4"]]
    assert_accelerators_only_for_the_learner(run_dir)
    # Moved late, actor 0 may still be starting when the run reaches its limit: it is then left
    # behind and the counter closes without its final report (the summary has its last one).
    assert_logs_clean(run_dir, allowed=("no final report from actor_0 within",))
    assert_progress_line_shown(output, 8000)
    [moved] = [record for record in restarts_of(run_dir) if record.get("supervisor")]
    assert moved["node"] == "actor/0" and moved["cause"] == (
        f"its supervisor ended (signal 9 (SIGKILL)) and its host {hosts.netns_name('h3')} did not answer; started again on "
        f"{hosts.netns_name('h4')}")
    summary = read(run_dir, "summary.json")
    assert summary["reached_max_env_steps"] and summary["env_steps"] == read(run_dir, "counts.json")["actor_steps"] >= 8000
    assert summary["learner_steps"] == read(run_dir, "learner.json")["learner_steps"] > 0 and summary["evaluations"] >= 1
    assert max(read(run_dir, "actor_1.json")["param_versions_seen"]) > 0
    assert_experience_recorded(run_dir, actors=(1,))
    assert_final_checkpoint(run_dir)
    assert_no_orphans(before, run_dir)


@pytest.mark.slow  # the path of local_mp's signal test (test_program) and of the het job's Ctrl-C above
def test_ctrl_c_of_the_hosts_launcher_stops_every_node(hosts, tmp_path):
    run_dir = str(tmp_path / "run")
    before = set(psutil.pids())
    with launched_until_the_learner_updates(run_dir, "--launch_type=hosts",
                                            f"--cluster={hosts_spec(tmp_path, hosts)}") as launcher:
        launcher.send_signal(signal.SIGINT)
        output = communicate_or_dump(launcher, timeout_s=15)  # as on one machine (test_program)
    assert launcher.returncode == 0, output[-3000:]
    assert_stopped_cleanly_mid_run(run_dir)
    assert_no_orphans(before, run_dir)


def communicate_or_dump(process, timeout_s):
    """The process's output once it exits; past `timeout_s`, a failure with its threads' stacks
    (it runs with -X faulthandler: SIGABRT dumps them)."""
    try:
        return process.communicate(timeout=timeout_s)[0]
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        output = process.communicate(timeout=30)[0]
        raise AssertionError(f"still running {timeout_s} s after the stop:\n{output[-6000:]}") from None


def test_dry_run_prints_the_het_job_and_submits_nothing(tmp_path, capsys):
    spec = write_spec(tmp_path / "cluster.json", {
        "components": [{"groups": ["replay", "counter"], "cpus": 4, "mem": "16G"},
                       {"groups": ["learner"], "gpus": 2, "cpus": 8},
                       {"groups": ["actor"], "nodes": 3, "cpus": 32, "partition": "cpu"}],
        "slurm": {"partition": "gpu", "time": "2:00:00"}})
    run_dir = tmp_path / "run"
    code = train_main(capsys, *train_command(str(run_dir), "--launch_type=slurm", f"--cluster={spec}", "--dry_run",
                                             "--slurm_account=lab")[3:])
    output = capsys.readouterr()
    assert code == 0, output.out + output.err
    script = output.out[output.out.index("#!/bin/bash"):]
    components = script.split("#SBATCH hetjob")
    assert len(components) == 3
    assert "#SBATCH --gres=gpu:2" in components[1] and "--gres" not in components[0] + components[2]
    assert "#SBATCH --nodes=3" in components[2] and "#SBATCH --cpus-per-task=32" in components[2]
    assert all("#SBATCH --account=lab" in c and "#SBATCH --time=2:00:00" in c for c in components)
    assert [c.count("#SBATCH --partition=gpu") for c in components] == [1, 1, 0] and "--partition=cpu" in components[2]
    assert "-m launch.runtime.slurm --launch_dir=" in script
    # The run outlives the job: requeued rather than ended, kept when a node fails, warned before
    # its time limit (stop_before_limit_s, 300 s by default), its output kept across a requeue.
    for option in ("--requeue", "--no-kill", "--open-mode=append", "--signal=B:USR1@300"):
        assert components[0].count(f"#SBATCH {option}\n") == 1 and option not in components[1] + components[2]
    assert not run_dir.exists()  # nothing written, nothing submitted


def test_the_job_reads_its_time_left_from_squeue():
    from launch.runtime.slurm_watch import parse_time_left

    assert parse_time_left("1-02:03:04") == 86400 + 2 * 3600 + 3 * 60 + 4
    assert parse_time_left("2:03:04") == 2 * 3600 + 3 * 60 + 4 and parse_time_left("3:04\n") == 184
    assert parse_time_left("0:45") == 45
    for no_limit in ("UNLIMITED", "NOT_SET", "INVALID", ""):
        assert parse_time_left(no_limit) is None


@pytest.mark.parametrize("spec, message", [
    ({"components": [{"groups": ["learner"]}, {"groups": ["learner", "actor"]}]}, "place each group in one component"),
    ({"components": [{"groups": ["replay", "counter"]}, {"groups": ["actors"]}]}, "groups the program does not have: actors"),
    ({"components": [{"groups": ["replay"], "gpus": -1}]}, "gpus >= 0"),
    ({"components": [{"groups": ["replay", "counter"]}], "slurm": {"max_jobs": 0}}, "max_jobs >= 1"),
])
def test_a_bad_cluster_spec_is_refused_before_anything_starts(tmp_path, capsys, spec, message):
    run_dir = tmp_path / "run"
    code = train_main(capsys, *train_command(str(run_dir), "--launch_type=hosts",
                                             f"--cluster={write_spec(tmp_path / 'c.json', spec)}")[3:])
    error = capsys.readouterr().err
    assert code == 2 and message in error, error[-2000:]
    assert not (run_dir / "logs").exists()


def kill_the_host(cluster, hosts, host):
    """SIGKILL of every process on `host` but its slurmd (so that it answers again at once): the
    job's step there (slurmstepd), the nodes' supervisors and the nodes."""
    slurmd = cluster._procs[f"slurmd.{host}"].pid
    victims = [psutil.Process(pid) for pid in hosts.namespace_pids(host) if pid != slurmd]
    for process in victims:
        process.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=30)
    return len(victims)


def current_job(run_dir):
    from launch.rundir.jobs import current_job as current

    return current(run_dir)


CHAIN_MAX_ENV_STEPS = 200_000


@pytest.mark.slow  # about 8 minutes: three SLURM job starts, two to their 3-minute time limit
@pytest.mark.timeout(1500)
def test_a_run_longer_than_its_time_limit_goes_on_across_jobs_through_lost_hosts_and_a_requeue(cluster, hosts,
                                                                                                tmp_path):
    """A detached het job with a 3-minute time limit, nodes asked to stop 30 s before it, its two
    actors on two hosts (h3, h4). In its first job: (a) every process of actor/1's host is
    killed, then (b) every process of the learner's host h2 (their slurmd aside; srun waits on
    for the killed slurmstepd, so the job finds nodes lost once the counter has heard nothing
    from them for 15 s): actor/1 starts again, as a step of its own, on the other actor host
    while actor/0 runs on; the learner's step starts again on its host. Then (d) `scontrol
    requeue`: the job starts again, resuming the run. Then (c) its time limit (brought near
    with `scontrol update`): the run goes on in a continuation job, until max_env_steps, with
    exact counts and a final checkpoint."""
    from launch.rundir import checkpoints

    run_dir = str(tmp_path / "run")
    components = [{"groups": list(groups)} for groups, _ in PLACEMENT]
    components[-1]["nodes"] = 2
    spec = write_spec(tmp_path / "cluster.json", {
        "components": components,
        "slurm": {"time": "3", "stop_before_limit_s": 30, "max_jobs": 8, "lost_after_s": 15}})
    before = set(psutil.pids())
    result = subprocess.run(
        train_command(run_dir, f"--max_env_steps={CHAIN_MAX_ENV_STEPS}", "--launch_type=slurm", f"--cluster={spec}",
                      "--detach", "--set=experiment.checkpoint_every_learner_steps=200"),
        cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "Detached." in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    [first_job] = pathlib.Path(run_dir, "launches", "0", "job_id").read_text().split()
    host_of_address = {address: name for name, address in hosts.hosts.items()}
    try:
        wait_for(lambda: learner_has_updated(run_dir) and counted(run_dir, 0).get("actor_steps", 0) >= 1000,
                 300, "the learner's first update and 1,000 env steps")
        # (a) Actor 1's host loses every process of the job; actor 0's host is untouched.
        actor_hosts = {node: host_of_address[served_on(run_dir, node)[-1]] for node in ("actor/0", "actor/1")}
        assert sorted(actor_hosts.values()) == ["h3", "h4"], actor_hosts
        assert kill_the_host(cluster, hosts, actor_hosts["actor/1"]) >= 3  # slurmstepd, a supervisor, an actor
        steps_at_kill = counted(run_dir, 0)["actor_steps"]
        wait_for(lambda: len(served_on(run_dir, "actor/1")) == 2
                 and counted(run_dir, 0)["actor_steps"] >= steps_at_kill + 500, 180,
                 "actor 1, started again, and the actors to take 500 more steps")
        # It moved to the other actor host; actor 0 ran on, never started again.
        assert [host_of_address[address] for address in served_on(run_dir, "actor/1")] == [
            actor_hosts["actor/1"], actor_hosts["actor/0"]]
        assert served_on(run_dir, "actor/0") == [hosts.hosts[actor_hosts["actor/0"]]]
        # (b) The learner's host loses every process of the job.
        learner_at_kill = counted(run_dir, 0)["learner_steps"]
        assert kill_the_host(cluster, hosts, "h2") >= 3
        wait_for(lambda: "learner: restarted from checkpoint " in log_text(run_dir, 0, "learner/0")
                 and counted(run_dir, 0)["learner_steps"] > learner_at_kill + 50, 180,
                 "the learner, started again from its checkpoint, to train on")
        # (d) The job is requeued (as a preemption does); to save SLURM's two minutes before a
        # requeued job may start again, it is made eligible at once.
        job = current_job(run_dir)
        cluster.run(["scontrol", "requeue", job["job_id"]])
        wait_for(lambda: cluster.job_state(job["job_id"]) == "PENDING", 120, "the requeued job to pend")
        cluster.run(["scontrol", "update", f"JobId={job['job_id']}", "StartTime=now"])
        wait_for(lambda: any(record.get("requeued") for record in jobs_records(run_dir)), 180,
                 "the requeued job to start again")
        # (c) Its time limit, brought within two minutes (as an administrator may: the driver
        # reads it from squeue), so that the run outlasts it however fast this machine is;
        # from there on the run goes on in continuation jobs to its end.
        wait_for(lambda: counted(run_dir, 1).get("learner_steps", 0) > 0, 180, "the requeued launch to train")
        run_time = re.search(r" RunTime=(?:(\d+)-)?(\d+):(\d+):(\d+)", cluster.job_info(job["job_id"])).groups()
        minutes = int(run_time[0] or 0) * 1440 + int(run_time[1]) * 60 + int(run_time[2]) + 2
        cluster.run(["scontrol", "update", f"JobId={job['job_id']}", f"TimeLimit={minutes}"])
        wait_for(lambda: os.path.exists(os.path.join(run_dir, "summary.json"))
                 and read(run_dir, "summary.json").get("reached_max_env_steps")
                 and cluster.job_state(current_job(run_dir)["job_id"]) == "COMPLETED", 1200,
                 "the run to end at max_env_steps")
    finally:
        print(json.dumps(jobs_records(run_dir), indent=1))
    records = jobs_records(run_dir)
    started = [record for record in records if record["event"] == "started"]
    continued = [record for record in records if record["event"] == "continued"]
    # The first job started twice (the requeue), then the run went on in at least one more job.
    assert started[0]["job_id"] == started[1]["job_id"] == first_job and started[1]["requeued"]
    assert not any(record["requeued"] for record in started[2:])
    assert len({record["job_id"] for record in started}) >= 2 and continued
    assert all(record["reason"].startswith("the SLURM job's time limit is near") for record in continued)
    assert [record["launch_index"] for record in started] == list(range(len(started)))
    assert [record["job_number"] for record in started] == list(range(1, len(started) + 1))
    assert records[-1]["event"] == "ended"
    for record in started:  # every job COMPLETED: none was cancelled or timed out
        assert cluster.job_state(record["job_id"]) == "COMPLETED", cluster.job_info(record["job_id"])
    # The lost steps were started again inside the first job, and recorded.
    relaunched = {record["node"]: record["cause"] for record in restarts_of(run_dir) if record.get("supervisor")}
    assert relaunched == {
        "actor/1": f"its host {actor_hosts['actor/1']} was lost (nothing heard from it for 15 s); started again on "
                   "another host",
        "learner": "its SLURM step was lost (nothing heard from its nodes for 15 s)"}
    # Counts exact, a final checkpoint at the last learner step, the run listed in its last job.
    last_launch = started[-1]["launch_index"]
    summary, counts = read(run_dir, "summary.json"), read(run_dir, "counts.json")
    assert summary["env_steps"] == counts["actor_steps"] >= CHAIN_MAX_ENV_STEPS
    assert summary["env_steps"] == summary["resumed_at"]["env_steps"] + counted(run_dir, last_launch)["actor_steps"]
    assert summary["learner_steps"] == read(run_dir, "learner.json")["learner_steps"]
    checkpoint, damaged = checkpoints.load_latest(run_dir)
    assert damaged == [] and checkpoint.step == summary["learner_steps"]
    listing = subprocess.run([sys.executable, "-m", "experiments.runs", "list", f"--root={tmp_path}"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    assert f"{len(started)} of 8 ({started[-1]['job_id']})" in listing, listing
    assert_no_orphans(before, run_dir)


@pytest.mark.slow  # about 2 minutes: the job's wait of lost_after_s (15 s), a node step, then Ctrl-C
def test_an_actor_frozen_past_lost_after_s_moves_and_its_old_copy_ends_when_it_wakes(cluster, hosts, tmp_path):
    """A het job, its two actors on h3 and h4. Actor 1's supervisor and node are frozen
    (SIGSTOP): to the rest they are as a host cut off from the network, or a paused machine.
    After lost_after_s (15 s) of silence the job starts actor 1 again on the other actor host.
    Woken (SIGCONT), the old copy hears from the counter that it was replaced and ends at once,
    without a final report; its supervisor does not start it again, and nothing takes that for
    a failure: Ctrl-C of the launcher then ends the job COMPLETED."""
    from test_faults import actor_senders

    run_dir = str(tmp_path / "run")
    components = [{"groups": list(groups)} for groups, _ in PLACEMENT]
    components[-1]["nodes"] = 2
    spec = write_spec(tmp_path / "cluster.json", {"components": components, "slurm": {"lost_after_s": 15}})
    host_of_address = {address: name for name, address in hosts.hosts.items()}
    launch_dir = os.path.join(run_dir, "launches", "0")
    before = set(psutil.pids())
    frozen = []
    try:
        with launched_until_the_learner_updates(run_dir, "--launch_type=slurm", f"--cluster={spec}",
                                                env=cluster.env) as launcher:
            old_host = host_of_address[served_on(run_dir, "actor/1")[-1]]
            frozen = [psutil.Process(pid) for pid in hosts.namespace_pids(old_host)
                      if f"--launch_dir={launch_dir}" in psutil.Process(pid).cmdline()]
            assert len(frozen) == 2  # actor 1's supervisor and its node; slurmstepd runs on
            for process in frozen:
                process.send_signal(signal.SIGSTOP)
            wait_for(lambda: len(served_on(run_dir, "actor/1")) == 2 and
                     sum(totals.get("actor_steps", 0) > 0 for totals in actor_senders(run_dir, "actor_1")) == 2,
                     180, "actor 1 started again elsewhere, and counting steps")
            for process in frozen:
                process.send_signal(signal.SIGCONT)
            wait_for(lambda: not any(process.is_running() and process.status() != psutil.STATUS_ZOMBIE
                                     for process in frozen), 30, "the old copy and its supervisor to end")
            old_steps = sorted(totals.get("actor_steps", 0) for totals in actor_senders(run_dir, "actor_1"))
            wait_for(lambda: counted(run_dir).get("actor_steps", 0) >= sum(old_steps) + 300, 120,
                     "the actors to go on")
            launcher.send_signal(signal.SIGINT)
            output = communicate_or_dump(launcher, timeout_s=60)
    finally:
        for process in frozen:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGCONT)
    assert launcher.returncode == 0, output[-3000:] + cluster.log_tails()
    [job_id] = pathlib.Path(launch_dir, "job_id").read_text().split()
    assert cluster.job_state(job_id) == "COMPLETED"
    log = log_text(run_dir, 0, "actor/1")
    assert [host_of_address[address] for address in served_on(run_dir, "actor/1")] == [
        old_host, host_of_address[served_on(run_dir, "actor/0")[-1]]]
    assert ("relay node actor/1: superseded: actor/1 runs as a newer process (attempt 1; this is attempt 0); "
            "this process ends now, without a final save or report") in log
    assert "relay supervisor: node actor/1 was replaced by a newer process elsewhere; not started again" in log
    relaunched = [record for record in restarts_of(run_dir) if record.get("supervisor")]
    assert [record["node"] for record in relaunched] == ["actor/1"]  # moved once; the old copy not restarted
    assert "failed" not in output
    assert_no_orphans(before, run_dir)


@pytest.mark.slow
def test_a_sweep_of_two_runs_goes_as_two_slurm_jobs_and_a_rerun_submits_nothing(cluster, hosts, tmp_path):
    """experiments.sweep on SLURM: each run its own heterogeneous job (submitted detached, followed
    by the runner through SLURM), both finished; the sweep run again finds nothing to do."""
    spec = {"agents": ["mpo"], "tasks": ["cartpole:swingup"], "seeds": [0, 1], "presets": ["debug"],
            "max_env_steps": 2000}
    sweep_dir = str(tmp_path / "S")
    before = set(psutil.pids())
    command = [sys.executable, "-m", "experiments.sweep", "run"]
    result = subprocess.run(command + [write_spec(tmp_path / "spec.json", spec), f"--dir={sweep_dir}",
                                       "--launch_type=slurm", f"--cluster={slurm_spec(tmp_path)}"],
                            cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 runs, 2 at a time (slurm)" in result.stdout and "2 finished" in result.stdout.splitlines()[-1]
    job_ids = set()
    for seed in (0, 1):
        run_dir = os.path.join(sweep_dir, "base", "cartpole_swingup", "mpo-debug", f"seed{seed}")
        [submitted] = [record for record in jobs_records(run_dir) if record["event"] == "submitted"]
        job_ids.add(submitted["job_id"])
        assert "JobState=COMPLETED" in cluster.job_info(submitted["job_id"])
        assert read(run_dir, "summary.json")["reached_max_env_steps"] and read(run_dir, "config.json")["seed"] == seed
    assert len(job_ids) == 2
    again = subprocess.run(command + [sweep_dir, "--launch_type=slurm", f"--cluster={slurm_spec(tmp_path)}"],
                           cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "start " not in again.stdout and "2 finished" in again.stdout
    assert_no_orphans(before, sweep_dir)


def served_on(run_dir, node, launch_index=0):
    """The addresses `node` announced in its log, one per start of its process."""
    return re.findall(rf"relay node {node} on (\S+) ", log_text(run_dir, launch_index, node))


def jobs_records(run_dir):
    from launch.rundir.jobs import run_jobs

    return run_jobs(run_dir)


def restarts_of(run_dir):
    from test_faults import restarts

    return restarts(run_dir)


def log_text(run_dir, launch_index, node):
    from launch.rundir.paths import RunPaths

    label, index = node.split("/")
    try:
        return pathlib.Path(RunPaths(run_dir).node_log(launch_index, label, int(index))).read_text(errors="replace")
    except FileNotFoundError:
        return ""
