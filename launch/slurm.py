"""`--launch_type=slurm`: a program as one SLURM job, a heterogeneous job of one component per
cluster-spec component (replay and counter on one host, the learner on a GPU host, actors on
CPU hosts, ...).

The launcher writes the launch directory (pickled program, cluster spec, job.json) and an
sbatch script, and submits it. In the job, the script runs this module's job driver on the
first host: it reads the hosts SLURM gave each component, writes them into the cluster
spec, starts the counter (one `srun` step), waits for its address, then starts each other
group as one `srun --het-group=<i>` step of `launch.entry` processes whose index is
SLURM_PROCID. The job ends when every node has returned: COMPLETED after the step limit
or a stop asked through the counter, CANCELLED after `scancel` (nodes get SIGTERM and
stop as on one machine: final checkpoint, flushed recorders, summary).

    python -m launch.slurm --launch_dir=RUN/launches/K     (the job driver; the sbatch script runs it)
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

from launch import cluster, entry, hosts, launching

JOB_FILE = "job.json"
SCRIPT_FILE = "job.sbatch"
JOB_ID_FILE = "job_id"
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
        value = getattr(options, name)
        if value:
            lines.append(f"--{name}={value}")
    lines.extend(options.extra)
    return lines


def sbatch_script(spec: cluster.ClusterSpec, launch_dir: str, run_dir: str, job_name: str,
                  python: str = sys.executable) -> str:
    """The job script: one `#SBATCH` block per component, `hetjob` between them, then the driver."""
    logs = os.path.join(launching.logs_dir(run_dir, int(os.path.basename(launch_dir))), "slurm-%j.out")
    lines = ["#!/bin/bash", f"#SBATCH --job-name={job_name}", f"#SBATCH --output={logs}"]
    for index, component in enumerate(spec.components):
        if index:
            lines.append("#SBATCH hetjob")
        lines.append(f"# component {index}: {', '.join(component.groups)}")
        lines.extend(f"#SBATCH {option}" for option in _component_options(component, spec.slurm))
    lines += [
        "",
        f"cd {shlex.quote(hosts.ROOT)}",
        f"export PYTHONPATH={shlex.quote(hosts.ROOT)}",
        f"exec {shlex.quote(python)} -m launch.slurm --launch_dir={shlex.quote(launch_dir)}",
        "",
    ]
    return "\n".join(lines)


def write_job(program, spec: cluster.ClusterSpec, run_dir: str, launch_index: int, job_name: str) -> str:
    """The launch directory, job.json and the sbatch script; returns the script's path."""
    sizes = {label: len(nodes) for label, nodes in program.groups.items()}
    spec.check_program(sizes, need_hosts=False)
    launch_dir = hosts.write_launch(program, spec, run_dir, launch_index)
    with open(os.path.join(launch_dir, JOB_FILE), "w") as file:
        json.dump({"groups": sizes, "run_dir": os.path.abspath(run_dir), "launch_index": launch_index,
                   "python": sys.executable}, file, indent=2)
    os.makedirs(launching.logs_dir(run_dir, launch_index), exist_ok=True)  # sbatch writes the job's output there
    path = os.path.join(launch_dir, SCRIPT_FILE)
    with open(path, "w") as file:
        file.write(sbatch_script(spec, launch_dir, run_dir, job_name))
    return path


def submit(script_path: str) -> str:
    """Submits the script with sbatch; returns the job id."""
    result = subprocess.run(["sbatch", "--parsable", script_path], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"sbatch refused the job: {result.stderr.strip() or result.stdout.strip()}")
    job_id = result.stdout.strip().split(";")[0]
    with open(os.path.join(os.path.dirname(script_path), JOB_ID_FILE), "w") as file:
        file.write(job_id + "\n")
    return job_id


def job_state(job_id: str) -> Optional[str]:
    """The job's state ("RUNNING", "COMPLETED", ...); None once SLURM no longer knows it.
    A heterogeneous job's state is its first component's."""
    result = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    for field in result.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return None


def cancel(job_id: str) -> None:
    subprocess.run(["scancel", job_id], capture_output=True)


# The job driver: runs inside the allocation.

def _expand(nodelist: str) -> List[str]:
    result = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return result.stdout.split()


def _node_address(name: str) -> str:
    """The address SLURM reaches node `name` at (NodeAddr; its name if none is set)."""
    result = subprocess.run(["scontrol", "show", "node", "-o", name], capture_output=True, text=True)
    for field in result.stdout.split():
        if field.startswith("NodeAddr="):
            return field.split("=", 1)[1]
    return name


def allocated_hosts(num_components: int, environ=os.environ) -> List[List[cluster.Host]]:
    """Each component's hosts, from SLURM's node lists."""
    if num_components == 1:
        lists = [environ["SLURM_JOB_NODELIST"]]
    else:
        lists = [environ[f"SLURM_JOB_NODELIST_HET_GROUP_{index}"] for index in range(num_components)]
    return [[cluster.Host(name, _node_address(name)) for name in _expand(nodelist)] for nodelist in lists]


def _srun(spec: cluster.ClusterSpec, group: str, ntasks: int, launch_dir: str, logs_dir: str, python: str,
          coordinator: Optional[str], node: str, nodelist: Optional[str] = None) -> subprocess.Popen:
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
    if len(spec.components) > 1:
        argv.append(f"--het-group={component_index}")
    if nodelist:
        argv.append(f"--nodelist={nodelist}")
    os.makedirs(os.path.join(logs_dir, group), exist_ok=True)
    argv += hosts.entry_argv(launch_dir, node, coordinator=coordinator,
                             index_env=None if "/" in node else "SLURM_PROCID", python=python)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL)


def run_job(launch_dir: str) -> int:
    """Starts the counter step, then one step per other group; returns when all have ended."""
    with open(os.path.join(launch_dir, JOB_FILE)) as file:
        job = json.load(file)
    with open(os.path.join(launch_dir, entry.CLUSTER_FILE)) as file:
        spec = cluster.from_json(json.load(file))
    spec = spec.with_hosts(allocated_hosts(len(spec.components)))
    with open(os.path.join(launch_dir, entry.CLUSTER_FILE), "w") as file:
        json.dump(cluster.to_json(spec), file, indent=2)
    logs_dir = launching.logs_dir(job["run_dir"], job["launch_index"])
    placement = {group: [host.name for host in spec.components[spec.component_of(group)].hosts] for group in job["groups"]}
    print(f"relay job: hosts per group {json.dumps(placement)}", flush=True)

    # scancel signals every step itself; the driver waits for them to end.
    signal.signal(signal.SIGTERM, lambda *_: print("relay job: SIGTERM, waiting for the nodes to stop", flush=True))
    python = job["python"]
    counter_host = spec.host_of("counter", 0).name
    steps: Dict[str, subprocess.Popen] = {
        "counter": _srun(spec, "counter", 1, launch_dir, logs_dir, python, None, "counter/0", nodelist=counter_host)}
    try:
        coordinator = entry.wait_for_coordinator(launch_dir, 300.0, alive=lambda: steps["counter"].poll() is None)
    except TimeoutError as error:
        print(f"relay job: {error}", flush=True)
        steps["counter"].wait()
        return 1
    for group, size in job["groups"].items():
        if group != "counter":
            steps[group] = _srun(spec, group, size, launch_dir, logs_dir, python, coordinator, group)
    codes = {}
    while len(codes) < len(steps):
        for group, step in steps.items():
            if group not in codes and step.poll() is not None:
                codes[group] = step.returncode
        time.sleep(0.2)
    failed = {group: code for group, code in codes.items() if code != 0}
    if failed:
        print(f"relay job: steps that failed: {failed}; their logs are under {logs_dir}", flush=True)
    return 1 if failed else 0


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m launch.slurm", description="Relay's SLURM job driver.")
    parser.add_argument("--launch_dir", required=True)
    args = parser.parse_args(argv)
    return run_job(args.launch_dir)


if __name__ == "__main__":
    sys.exit(main())
