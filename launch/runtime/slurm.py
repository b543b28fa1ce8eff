"""`--launch_type=slurm`: a program as one SLURM job, a heterogeneous job of one component per
cluster-spec component (replay and counter on one host, the learner on a GPU host, actors on
CPU hosts, ...); where a site forbids heterogeneous jobs, one job per component.

The launcher writes the launch directory (pickled program, cluster spec, job.json) and an
sbatch script, and submits it. In the job, the script runs this module's job driver on the
first host: it reads the hosts SLURM gave each component, writes them into the cluster
spec, starts the counter (one `srun` step), waits for its address, then starts each other
group as one `srun --het-group=<i>` step of `launch.runtime.entry` processes whose index is
SLURM_PROCID. The job ends when every node has returned: COMPLETED after the step limit
or a stop asked through the counter, CANCELLED after `scancel` (nodes get SIGTERM and
stop as on one machine: final checkpoint, flushed recorders, summary).

    python -m launch.runtime.slurm --launch_dir=RUN/launches/K     (the job driver; the sbatch script runs it)
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

from launch.nodes import rpc
from launch.rundir.paths import CLUSTER_FILE, JOB_FILE, JOB_ID_FILE, JOB_SCRIPT_FILE, RunPaths, run_dir_of_launch
from launch.runtime import cluster, entry
from launch.runtime.launch_files import ROOT, entry_argv, write_launch
from launch.runtime.supervisor import RestartPolicy
from launch.runtime.watch import LaunchWatch
# Job states in which the job has not ended yet.
ACTIVE_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "SIGNALING",
                 "STAGE_OUT")


def _component_options(component: cluster.Component, options: cluster.SlurmOptions) -> List[str]:
    lines = [f"--nodes={component.nodes}", "--ntasks-per-node=1"]
    if component.cpus:
        lines.append(f"--cpus-per-task={component.cpus}")
    if component.mem:
        lines.append(f"--mem={component.mem}")
    if component.gpus:
        lines.append(f"--gres=gpu:{component.gpus}")
    for name in ("partition", "account", "time"):
        value = component.partition if name == "partition" and component.partition else getattr(options, name)
        if value:
            lines.append(f"--{name}={value}")
    lines.extend(options.extra)
    return lines


def _script(blocks: List[Tuple[int, cluster.Component]], spec: cluster.ClusterSpec, launch_dir: str, run_dir: str,
            job_name: str, python: str, driver_args: str) -> str:
    logs = os.path.join(RunPaths(run_dir).logs_dir(int(os.path.basename(launch_dir))), "slurm-%j.out")
    lines = ["#!/bin/bash", f"#SBATCH --job-name={job_name}", f"#SBATCH --output={logs}"]
    for position, (index, component) in enumerate(blocks):
        if position:
            lines.append("#SBATCH hetjob")
        lines.append(f"# component {index}: {', '.join(component.groups)}")
        lines.extend(f"#SBATCH {option}" for option in _component_options(component, spec.slurm))
    lines += [
        "",
        f"cd {shlex.quote(ROOT)}",
        f"export PYTHONPATH={shlex.quote(ROOT)}",
        f"exec {shlex.quote(python)} -m launch.runtime.slurm --launch_dir={shlex.quote(launch_dir)}{driver_args}",
        "",
    ]
    return "\n".join(lines)


def sbatch_scripts(spec: cluster.ClusterSpec, launch_dir: str, run_dir: str, job_name: str,
                   python: str = sys.executable) -> List[Tuple[str, str]]:
    """(file name, script) of each job to submit, the counter's first: one heterogeneous job
    (`#SBATCH hetjob` between the components), or with `"slurm": {"heterogeneous": false}`
    one job per component."""
    components = list(enumerate(spec.components))
    if spec.slurm.heterogeneous:
        return [(JOB_SCRIPT_FILE, _script(components, spec, launch_dir, run_dir, job_name, python, ""))]
    counter = spec.component_of("counter")
    ordered = [components[counter]] + [item for item in components if item[0] != counter]
    return [(f"job_{index}.sbatch", _script([(index, component)], spec, launch_dir, run_dir, f"{job_name}-{index}",
                                            python, f" --component={index}"))
            for index, component in ordered]


def write_job(program, spec: cluster.ClusterSpec, run_dir: str, launch_index: int, job_name: str,
              restarts: RestartPolicy = RestartPolicy()) -> List[str]:
    """The launch directory, job.json and the sbatch scripts; returns the scripts' paths, the counter's first."""
    sizes = {label: len(nodes) for label, nodes in program.groups.items()}
    spec.check_program(cluster.PROGRAM_GROUPS, need_hosts=False)
    launch_dir = write_launch(program, spec, run_dir, launch_index, restarts)
    with open(os.path.join(launch_dir, JOB_FILE), "w") as file:
        json.dump({"groups": sizes, "run_dir": os.path.abspath(run_dir), "launch_index": launch_index,
                   "python": sys.executable}, file, indent=2)
    os.makedirs(RunPaths(run_dir).logs_dir(launch_index), exist_ok=True)  # sbatch writes the job's output there
    paths = []
    for name, script in sbatch_scripts(spec, launch_dir, run_dir, job_name):
        paths.append(os.path.join(launch_dir, name))
        with open(paths[-1], "w") as file:
            file.write(script)
    return paths


def submit(script_paths: List[str]) -> List[str]:
    """Submits the scripts with sbatch, every one after the first once the first has started
    (it runs the counter); returns the job ids."""
    job_ids = []
    for path in script_paths:
        dependency = [f"--dependency=after:{job_ids[0]}"] if job_ids else []
        result = subprocess.run(["sbatch", "--parsable", *dependency, path], capture_output=True, text=True)
        if result.returncode != 0:
            cancel(job_ids)
            raise RuntimeError(f"sbatch refused {path}: {result.stderr.strip() or result.stdout.strip()}")
        job_ids.append(result.stdout.strip().split(";")[0])
    with open(os.path.join(os.path.dirname(script_paths[0]), JOB_ID_FILE), "w") as file:
        file.write("".join(f"{job_id}\n" for job_id in job_ids))
    return job_ids


def job_state(job_id: str) -> Optional[str]:
    """The job's state ("RUNNING", "COMPLETED", ...); None once SLURM no longer knows it.
    A heterogeneous job's state is its first component's."""
    result = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    for field in result.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return None


class Job:
    """A submitted job as `launch.runtime.watch` sees a process: `poll()` is None until it has
    ended, then 0 if it COMPLETED or was CANCELLED (or SLURM no longer knows it), else 1. A job
    SLURM does not know (yet, or any more, or scontrol failed) counts as ended only after
    `unknown_polls` polls in a row."""

    def __init__(self, job_id: str, unknown_polls: int = 5):
        self.job_id = job_id
        self._unknown_polls = unknown_polls
        self._unknown = 0
        self.state: Optional[str] = None
        self._code: Optional[int] = None

    def poll(self) -> Optional[int]:
        if self._code is None:
            self.state = job_state(self.job_id)
            self._unknown = self._unknown + 1 if self.state is None else 0
            if self.state not in ACTIVE_STATES and (self.state is not None or self._unknown >= self._unknown_polls):
                self._code = 0 if self.state in (None, "COMPLETED", "CANCELLED") else 1
        return self._code


def cancel(job_ids: List[str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True)


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
          coordinator: Optional[str], node: str, heterogeneous: bool, nodelist: Optional[str] = None) -> subprocess.Popen:
    component_index = spec.component_of(group)
    component = spec.components[component_index]
    nodes = min(ntasks, len(component.hosts))
    tasks_per_node = -(-ntasks // nodes)
    # Each task its share of a host's CPUs (the learner, alone on its host, gets them all).
    cpus_per_task = max(1, (component.cpus or 1) // tasks_per_node)
    # Explicit per-step sizes: the job's own (--ntasks-per-node=1, --cpus-per-task) are in the
    # environment srun inherits. Steps overlap: every node of a host shares its allocation.
    argv = ["srun", "--overlap", "--overcommit", "--cpu-bind=none", "--kill-on-bad-exit=0", f"--ntasks={ntasks}",
            f"--nodes={nodes}", f"--ntasks-per-node={tasks_per_node}", f"--cpus-per-task={cpus_per_task}",
            "--distribution=cyclic",
            f"--output={os.path.join(logs_dir, group, '%t')}", f"--job-name={group}"]
    if heterogeneous and len(spec.components) > 1:
        argv.append(f"--het-group={component_index}")
    if component.gpus:  # the step asks for the component's GPUs itself: a step's GRES default varies by site
        argv.append(f"--gres=gpu:{component.gpus}")
    if nodelist:
        argv.append(f"--nodelist={nodelist}")
    os.makedirs(os.path.join(logs_dir, group), exist_ok=True)
    argv += entry_argv(launch_dir, node, coordinator=coordinator,
                       index_env=None if "/" in node else "SLURM_PROCID", python=python)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL)


def run_job(launch_dir: str, component: Optional[int] = None) -> int:
    """Starts the counter step, then one step per other group; returns when all have ended.
    `component`: this job runs only that component's groups (one job per component)."""
    with open(os.path.join(launch_dir, JOB_FILE)) as file:
        job = json.load(file)
    with open(os.path.join(launch_dir, CLUSTER_FILE)) as file:
        spec = cluster.from_json(json.load(file))
    heterogeneous = component is None
    if heterogeneous:
        spec = spec.with_hosts(allocated_hosts(len(spec.components)))
        with open(os.path.join(launch_dir, CLUSTER_FILE), "w") as file:
            json.dump(cluster.to_json(spec), file, indent=2)
    else:
        spec = spec.with_component_hosts(component, allocated_hosts(1)[0])
    groups = {group: size for group, size in job["groups"].items() if heterogeneous or spec.component_of(group) == component}
    logs_dir = RunPaths(job["run_dir"]).logs_dir(job["launch_index"])
    placement = {group: [host.name for host in spec.components[spec.component_of(group)].hosts] for group in groups}
    print(f"relay job: hosts per group {json.dumps(placement)}", flush=True)

    python = job["python"]
    steps: Dict[str, subprocess.Popen] = {}
    coordinator = None

    def request_stop(reason: str) -> bool:
        rpc.ask_to_stop(coordinator, reason)
        return True  # asked or not: without a counter its nodes stop themselves once they cannot reach it

    def terminate(force: bool) -> None:  # the nodes did not stop in time: end their steps
        for step in steps.values():
            if step.poll() is None:
                step.send_signal(signal.SIGKILL if force else signal.SIGTERM)

    # scancel signals every step itself; a SIGTERM to this script alone (`scancel --batch`,
    # `--signal=B:TERM@60`) asks the counter to stop the program.
    with LaunchWatch(steps, request_stop, terminate, log_of=lambda name: os.path.join(logs_dir, name.split(" ")[-1]),
                     signals={signal.SIGTERM: "SIGTERM to the job script"}) as watch:
        if "counter" in groups:
            steps["SLURM step counter"] = _srun(spec, "counter", 1, launch_dir, logs_dir, python, None, "counter/0",
                                                heterogeneous, nodelist=spec.host_of("counter", 0).name)
        try:
            # The counter's job started first; another job's counter may still be starting.
            counter_step = steps.get("SLURM step counter")
            coordinator = entry.wait_for_coordinator(
                launch_dir, 600.0, alive=lambda: counter_step is None or counter_step.poll() is None)
        except TimeoutError as error:
            print(f"relay job: {error}", flush=True)
            for step in steps.values():
                step.wait()
            return 1
        for group, size in groups.items():
            if group != "counter":
                steps[f"SLURM step {group}"] = _srun(spec, group, size, launch_dir, logs_dir, python, coordinator,
                                                     group, heterogeneous)
        codes = watch.run()
    failed = {name: code for name, code in codes.items() if code != 0}
    if failed:
        print(f"relay job: steps that failed: {failed}; their logs are under {logs_dir}", flush=True)
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
