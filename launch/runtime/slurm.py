"""The SLURM job driver: what a launch's sbatch script runs (`launch.runtime.slurm_submit`
writes and submits it). On the job's first host it reads the hosts SLURM gave each
component, writes them into the cluster spec, starts the counter (one `srun` step), waits
for its address, then starts each other group as one `srun --het-group=<i>` step of
`launch.runtime.entry` processes whose index is SLURM_PROCID. The job ends when every node
has returned: COMPLETED after the step limit or a stop asked through the counter,
CANCELLED after `scancel` (nodes get SIGTERM and stop as on one machine: final checkpoint,
flushed recorders, summary).

A heterogeneous job also outlives what a long run meets on a shared cluster:
- a step that is lost (every process of a host killed, its node failed: `--no-kill` keeps
  the job) is started again as a new step on the component's hosts, within the nodes'
  restart policy;
- before the job's time limit (`stop_before_limit_s`, from `squeue`'s time left; SLURM's
  `--signal=B:USR1` as well) the nodes stop as at Ctrl-C, and the run goes on in a
  continuation job (the same script on a new launch, `--resume`'s), as it does when a step
  cannot be started again inside the job;
- a job that SLURM requeues (`scontrol requeue`, preemption, its batch host lost) resumes
  the run where it starts again;
up to `max_jobs` jobs. RUN_DIR/jobs.jsonl says which job of how many the run is in.

    python -m launch.runtime.slurm --launch_dir=RUN/launches/K     (the job driver; the sbatch script runs it)
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Optional

from launch.nodes import rpc
from launch.nodes.counter import saved_stop_reason
from launch.rundir.jobs import current_job, note_job
from launch.rundir.jsonio import read_json
from launch.rundir.paths import CLUSTER_FILE, JOB_FILE, JOB_SCRIPT_FILE, JOB_STARTED_FILE, SUPERVISION_FILE, RunPaths
from launch.runtime import cluster, entry
from launch.runtime.launch_files import entry_argv
from launch.runtime.relaunch import Relaunches, call_or_none
from launch.runtime.slurm_submit import submit, write_job
from launch.runtime.slurm_watch import LOST_STEP_CODE, TIME_LIMIT_REASON, Step, TimeLimitWatch, time_left_s
from launch.runtime.supervisor import RestartPolicy, describe_exit
from launch.runtime.watch import LaunchWatch, failures

# Why a job's program stopped, when the run goes on in another job: its time limit was near
# (TIME_LIMIT_REASON), or a step was lost past what the job could start again (the watch's
# "SLURM step <group> ended ...").
LOST_STEP_REASON = "SLURM step "
# The job driver: runs inside the allocation.

def _expand(nodelist: str) -> List[str]:
    result = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return result.stdout.split()


def allocated_hosts(num_components: int, environ=os.environ) -> List[List[cluster.Host]]:
    """Each component's hosts, from SLURM's node lists (a job of one component: its own)."""
    if num_components == 1:
        lists = [environ["SLURM_JOB_NODELIST"]]
    else:
        lists = [environ[f"SLURM_JOB_NODELIST_HET_GROUP_{index}"] for index in range(num_components)]
    return [[cluster.Host(name, cluster.slurm_node_address(name)) for name in _expand(nodelist)] for nodelist in lists]


def _srun(spec: cluster.ClusterSpec, group: str, ntasks: int, launch_dir: str, logs_dir: str, python: str,
          coordinator: Optional[str], node: str, heterogeneous: bool, nodelist: Optional[str] = None,
          relaunched: bool = False, port: Optional[int] = None, exclude: Optional[str] = None) -> subprocess.Popen:
    """One step of `ntasks` entry processes of `group` (`node`: the group, or one node of it,
    "counter/0"); `relaunched`: it replaces a lost step, its nodes go on as restarted ones;
    `exclude`: a host it must not run on."""
    component_index = spec.component_of(group)
    component = spec.components[component_index]
    nodes = min(ntasks, len(component.hosts))
    tasks_per_node = -(-ntasks // nodes)
    # Each task its share of a host's CPUs (the learner, alone on its host, gets them all).
    cpus_per_task = max(1, (component.cpus or 1) // tasks_per_node)
    # Explicit per-step sizes: the job's own (--ntasks-per-node=1, --cpus-per-task) are in the
    # environment srun inherits. Steps overlap: every node of a host shares its allocation.
    # A step of one node writes that node's log; every step appends: a relaunched node's log
    # keeps its earlier attempts.
    output = os.path.join(logs_dir, group, node.split("/")[1] if "/" in node else "%t")
    argv = ["srun", "--overlap", "--overcommit", "--cpu-bind=none", "--kill-on-bad-exit=0", f"--ntasks={ntasks}",
            f"--nodes={nodes}", f"--ntasks-per-node={tasks_per_node}", f"--cpus-per-task={cpus_per_task}",
            "--distribution=cyclic", f"--output={output}", "--open-mode=append", f"--job-name={group}"]
    if heterogeneous and len(spec.components) > 1:
        argv.append(f"--het-group={component_index}")
    if component.gpus:  # the step asks for the component's GPUs itself: a step's GRES default varies by site
        argv.append(f"--gres=gpu:{component.gpus}")
    if nodelist:
        argv.append(f"--nodelist={nodelist}")
    if exclude:
        argv.append(f"--exclude={exclude}")
    os.makedirs(os.path.join(logs_dir, group), exist_ok=True)
    argv += entry_argv(launch_dir, node, coordinator=coordinator,
                       index_env=None if "/" in node else "SLURM_PROCID", python=python, port=port,
                       relaunched=relaunched)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL)


def _submission_environ() -> Dict[str, str]:
    """This job's environment without its own SLURM settings, for a job it submits."""
    return {name: value for name, value in os.environ.items()
            if not name.startswith(("SLURM_", "SBATCH_", "SRUN_")) or name == "SLURM_CONF"}


def _next_launch(run_dir: str, why: str) -> Optional[str]:
    """A new launch of the run, resuming it from its newest checkpoint (as `--resume` does), for
    its next job; None, saying why, when the run has ended or its job budget is spent."""
    from launch.program import make_program
    from launch.rundir.run_config import write_config
    from launch.runtime.run_setup import Resume, prepare_resume

    job = current_job(run_dir)
    previous = RunPaths(run_dir).launch_dir(job["launch_index"])
    if job["job_number"] >= job["max_jobs"]:
        print(f"relay job: the run does not go on ({why}): its {job['max_jobs']} jobs are spent (slurm max_jobs). "
              f"Continue it with python -m experiments.train --resume={run_dir} --launch_type=slurm --cluster=SPEC "
              f"[--slurm_max_jobs=N]", flush=True)
        note_job(run_dir, "ended", job_id=os.environ.get("SLURM_JOB_ID"), reason=why, budget_spent=True)
        return None
    try:
        config, environment_spec = prepare_resume(Resume(run_dir))
    except ValueError as error:  # e.g. the run reached max_env_steps as it stopped
        print(f"relay job: the run does not go on: {error}", flush=True)
        note_job(run_dir, "ended", job_id=os.environ.get("SLURM_JOB_ID"), reason=str(error))
        return None
    write_config(config)
    with open(os.path.join(previous, JOB_FILE)) as file:
        job_name = json.load(file)["job_name"]
    with open(os.path.join(previous, CLUSTER_FILE)) as file:
        spec = cluster.from_json(json.load(file))
    write_job(make_program(config, environment_spec), spec, run_dir, config.launch_index, job_name,
              RestartPolicy.of_experiment(config), job_number=job["job_number"] + 1)
    return RunPaths(run_dir).launch_dir(config.launch_index)


def _this_jobs_launch(launch_dir: str) -> Optional[str]:
    """The launch this job runs: the script's own, or, for a job SLURM requeued after it had
    started it, a new one resuming the run. None when the run does not go on."""
    with open(os.path.join(launch_dir, JOB_FILE)) as file:
        run_dir = json.load(file)["run_dir"]
    job_id = os.environ.get("SLURM_JOB_ID", "")
    if os.path.exists(os.path.join(launch_dir, JOB_STARTED_FILE)):
        print(f"relay job: job {job_id} was requeued (restart {os.environ.get('SLURM_RESTART_COUNT', '?')}); "
              "resuming the run from its newest checkpoint", flush=True)
        launch_dir = _next_launch(run_dir, f"job {job_id} was requeued")
        if launch_dir is None:
            return None
    with open(os.path.join(launch_dir, JOB_STARTED_FILE), "w") as file:
        file.write(job_id + "\n")
    with open(os.path.join(launch_dir, JOB_FILE)) as file:
        job = json.load(file)
    note_job(run_dir, "started", job_id=job_id, job_number=job["job_number"], max_jobs=job["max_jobs"],
             launch_index=job["launch_index"], requeued=int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0)
    return launch_dir


def _go_on(launch_dir: str, run_dir: str, watch_reason: Optional[str]) -> None:
    """After the program stopped: if it stopped for the time limit or a lost step, a continuation
    job resumes it (within the job budget); otherwise the run stays stopped (its step limit, a
    person's stop, a node's own error)."""
    reason = saved_stop_reason(launch_dir) or watch_reason or ""
    if not reason.startswith((TIME_LIMIT_REASON, LOST_STEP_REASON)):
        note_job(run_dir, "ended", job_id=os.environ.get("SLURM_JOB_ID"), reason=reason)
        return
    next_launch = _next_launch(run_dir, reason)
    if next_launch is None:
        return
    try:
        [job_id] = submit([os.path.join(next_launch, JOB_SCRIPT_FILE)], environ=_submission_environ())
    except RuntimeError as error:  # sbatch refused it: the run is stopped whole, for --resume
        print(f"relay job: the run does not go on: {error}. Continue it with python -m experiments.train "
              f"--resume={run_dir} --launch_type=slurm --cluster=SPEC", flush=True)
        note_job(run_dir, "ended", job_id=os.environ.get("SLURM_JOB_ID"), reason=f"{reason}; {error}")
        return
    with open(os.path.join(next_launch, JOB_FILE)) as file:
        job = json.load(file)
    note_job(run_dir, "continued", job_id=job_id, job_number=job["job_number"], max_jobs=job["max_jobs"],
             launch_index=job["launch_index"], reason=reason)
    print(f"relay job: the run goes on in job {job_id} (job {job['job_number']} of {job['max_jobs']}): {reason}",
          flush=True)


def run_job(launch_dir: str, component: Optional[int] = None) -> int:
    """Starts the counter step, then one step per other group; returns when all have ended.
    `component`: this job runs only that component's groups (one job per component)."""
    heterogeneous = component is None
    if heterogeneous:
        launch_dir = _this_jobs_launch(launch_dir)
        if launch_dir is None:
            return 0
    with open(os.path.join(launch_dir, JOB_FILE)) as file:
        job = json.load(file)
    with open(os.path.join(launch_dir, CLUSTER_FILE)) as file:
        spec = cluster.from_json(json.load(file))
    if heterogeneous:
        spec = spec.with_hosts(allocated_hosts(len(spec.components)))
        with open(os.path.join(launch_dir, CLUSTER_FILE), "w") as file:
            json.dump(cluster.to_json(spec), file, indent=2)
    else:
        spec = spec.with_component_hosts(component, allocated_hosts(1)[0])
    groups = {group: size for group, size in job["groups"].items() if heterogeneous or spec.component_of(group) == component}
    logs_dir = RunPaths(job["run_dir"]).logs_dir(job["launch_index"])
    placement = {group: [host.name for host in spec.components[spec.component_of(group)].hosts] for group in groups}
    print(f"relay job: launch {job['launch_index']}, job {job.get('job_number', 1)} of {job.get('max_jobs', 1)}; "
          f"hosts per group {json.dumps(placement)}", flush=True)

    python = job["python"]
    steps: Dict[str, subprocess.Popen] = {}
    coordinator = None
    relaunches = Relaunches(RestartPolicy.from_json(read_json(os.path.join(launch_dir, SUPERVISION_FILE)) or {}),
                            launch_dir, lambda: coordinator)

    def silent_for(nodes: List[str]) -> Optional[dict]:
        return call_or_none(lambda: rpc.final_client(coordinator, call_timeout_s=2.0, tries=1).silent_for(nodes))

    def program_ended() -> bool:  # the counter wrote the summary and ended
        counter_step = steps.get("SLURM step counter")
        return counter_step is not None and counter_step.poll() == 0

    def program_stopping() -> bool:  # as the counter last saved its state
        return saved_stop_reason(launch_dir) is not None

    def watched(srun: subprocess.Popen, nodes: List[str]) -> Step:
        return Step(srun, nodes, silent_for, spec.slurm.lost_after_s, move_nodes=move_nodes if len(nodes) > 1 else None,
                    program_ended=program_ended, program_stopping=program_stopping)

    def counter_silence() -> Callable[[List[str]], dict]:
        """The counter's own silence, as `Step` reads its nodes': seconds since it last answered
        the job (None until it first has, since its step started)."""
        answered = {}

        def silent_for(nodes: List[str]) -> dict:
            if coordinator and call_or_none(lambda: rpc.final_client(coordinator, call_timeout_s=2.0,
                                                                     tries=1).silent_for([])) is not None:
                answered["at"] = time.time()
            return {"counter/0": time.time() - answered["at"] if answered else None}

        return silent_for

    def start_step(group: str, relaunched: bool = False) -> None:
        if group == "counter":
            port = int(coordinator.rpartition(":")[2]) if relaunched else None
            srun = _srun(spec, "counter", 1, launch_dir, logs_dir, python, None, "counter/0", heterogeneous,
                         nodelist=spec.host_of("counter", 0).name, relaunched=relaunched, port=port)
            # A counter lost with its host leaves an srun that waits on, and no one to hear the
            # other steps' silence: the job asks the counter itself.
            steps["SLURM step counter"] = Step(srun, ["counter/0"], counter_silence(),
                                               spec.slurm.lost_after_s) if heterogeneous else srun
        else:
            srun = _srun(spec, group, groups[group], launch_dir, logs_dir, python, coordinator, group, heterogeneous,
                         relaunched=relaunched)
            steps[f"SLURM step {group}"] = watched(srun, [f"{group}/{index}" for index in range(groups[group])])

    def start_node_step(node: str, exclude: Optional[str] = None) -> None:
        """One node of a group as a step of its own, replacing the node's lost task."""
        srun = _srun(spec, node.split("/")[0], 1, launch_dir, logs_dir, python, coordinator, node, heterogeneous,
                     relaunched=True, exclude=exclude)
        steps[f"SLURM step {node}"] = watched(srun, [node])

    def host_of(node: str) -> Optional[str]:
        """The host `node` served on, as it registered with the counter."""
        address = (relaunches.registered_address(node) or "").rpartition(":")[0]
        hosts = spec.components[spec.component_of(node.split("/")[0])].hosts
        return next((host.name for host in hosts if address in (host.address, host.name)), None)

    def move_nodes(nodes: List[str]) -> bool:
        """Nodes of a running step fell silent (their host lost, its step's tasks there killed):
        each starts again as a step of its own on another host of its component, if it has one,
        the step's other nodes running on."""
        if not all(relaunches.allow(f"SLURM step {node}", counter_lost=False) for node in nodes):
            return False
        for node in nodes:
            group = node.split("/")[0]
            lost_host = host_of(node)
            others = len(spec.components[spec.component_of(group)].hosts) > 1
            elsewhere = others and lost_host is not None
            start_node_step(node, exclude=lost_host if elsewhere else None)
            relaunches.record(node, LOST_STEP_CODE, RunPaths(job["run_dir"]).node_log(job["launch_index"], group,
                                                                                    int(node.split("/")[1])),
                              f"its host {lost_host or '(unknown)'} was lost (nothing heard from it for "
                              f"{spec.slurm.lost_after_s:.0f} s); started again "
                              + ("on another host" if elsewhere else "on its component's hosts"))
        return True

    def restart_step(name: str, code: int) -> bool:
        """A step lost while the program runs (its host's processes killed, its node failed):
        started again on the component's hosts, its nodes going on as restarted ones."""
        step, target = steps[name], name.split(" ")[-1]
        if getattr(step, "refused", False) or program_stopping():  # refused: some of its nodes still run
            return False
        if not relaunches.allow(name, counter_lost=target == "counter"):
            return False
        lost = getattr(step, "lost_after_s", None)
        if "/" in target:
            start_node_step(target)
        elif getattr(step, "moved", None):  # the rest of a group some of whose nodes were moved
            del steps[name]
            for node in step.nodes:
                start_node_step(node)
        else:
            start_step(target, relaunched=True)
        relaunches.record(target, code, os.path.join(logs_dir, target),
                          f"its SLURM step was lost (nothing heard from its nodes for {lost:.0f} s)" if lost
                          else f"its SLURM step ended ({describe_exit(code)})")
        return True

    def request_stop(reason: str) -> bool:
        rpc.ask_to_stop(coordinator, reason)
        return True  # asked or not: without a counter its nodes stop themselves once they cannot reach it

    def terminate(force: bool) -> None:  # the nodes did not stop in time: end their steps
        running = [step for step in list(steps.values()) if step.poll() is None]
        if not force:
            for step in running:
                step.send_signal(signal.SIGTERM)  # srun hands it to its tasks
            return
        # srun hands SIGUSR2 on: each hung node writes its threads' stacks to its log. Then two
        # SIGINTs within a second: srun kills its tasks (a SIGKILL of srun would leave them running).
        for sig in (signal.SIGUSR2, signal.SIGINT, signal.SIGINT):
            for step in running:
                if step.poll() is None:
                    step.send_signal(sig)
            time.sleep(1.0 if sig == signal.SIGUSR2 else 0.1)
        deadline = time.time() + 15.0
        while any(step.poll() is None for step in running) and time.time() < deadline:
            time.sleep(0.2)
        for step in running:
            if step.poll() is None:
                step.kill()

    # scancel signals every step itself; a SIGTERM to this script alone (`scancel --batch`)
    # asks the counter to stop the program.
    with LaunchWatch(steps, request_stop, terminate, log_of=lambda name: os.path.join(logs_dir, name.split(" ")[-1]),
                     signals={signal.SIGTERM: "SIGTERM to the job script"},
                     restart=restart_step if heterogeneous else None) as watch:
        job_id = os.environ.get("SLURM_JOB_ID", "")
        time_limit = TimeLimitWatch(lambda: time_left_s(job_id), spec.slurm.stop_before_limit_s, watch.stop_soon)
        if heterogeneous:  # SLURM's warning of the time limit (`#SBATCH --signal=B:USR1@...`)
            previous_handler = signal.signal(signal.SIGUSR1, time_limit.warn)
        if "counter" in groups:
            start_step("counter")
        try:
            # The counter's job started first; another job's counter may still be starting.
            counter_step = steps.get("SLURM step counter")
            counter_srun = getattr(counter_step, "srun", counter_step)  # its srun: it cannot be asked yet
            coordinator = entry.wait_for_coordinator(
                launch_dir, 600.0, alive=lambda: counter_srun is None or counter_srun.poll() is None)
        except TimeoutError as error:
            print(f"relay job: {error}", flush=True)
            for step in steps.values():
                step.wait()
            return 1
        for group in groups:
            if group != "counter":
                start_step(group)
        if heterogeneous and os.environ.get("SLURM_JOB_ID"):
            threading.Thread(target=time_limit.run, daemon=True, name="time-limit").start()
        try:
            codes = watch.run()
        finally:
            time_limit.close()
            if heterogeneous:
                signal.signal(signal.SIGUSR1, previous_handler)
    failed = failures(codes)
    if failed:
        print(f"relay job: steps that failed: {failed}; their logs are under {logs_dir}", flush=True)
    if heterogeneous:
        _go_on(launch_dir, job["run_dir"], watch.stop_reason)
    return 1 if failed else 0


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m launch.runtime.slurm", description="Relay's SLURM job driver.")
    parser.add_argument("--launch_dir", required=True)
    parser.add_argument("--component", type=int, default=None, help="one job per component: this job's")
    args = parser.parse_args(argv)
    return run_job(args.launch_dir, args.component)


if __name__ == "__main__":
    sys.exit(main())
