"""`--launch_type=slurm`, the launcher's side: the sbatch scripts of a launch (one
heterogeneous job of one component per cluster-spec component, or one job per component
where a site forbids heterogeneous jobs), their submission, and following them to their end
(`Job`; `JobChain` follows a run into each job that goes on with it). The job driver that
the scripts run is `launch.runtime.slurm`."""

import json
import os
import shlex
import subprocess
import sys
from typing import List, Optional, Tuple

from launch.rundir.jobs import current_job
from launch.rundir.paths import JOB_FILE, JOB_ID_FILE, JOB_SCRIPT_FILE, RunPaths
from launch.runtime import cluster
from launch.runtime.launch_files import ROOT, write_launch
from launch.runtime.supervisor import RestartPolicy

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
    if len(blocks) == len(spec.components) and spec.slurm.heterogeneous:
        # The run outlives the job (see the module's doc): requeue it rather than end it, keep it when
        # a node fails, warn the script before the time limit, and keep a requeued run's output.
        lines += ["#SBATCH --requeue", "#SBATCH --no-kill", "#SBATCH --open-mode=append",
                  f"#SBATCH --signal=B:USR1@{max(1, int(spec.slurm.stop_before_limit_s))}"]
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
              restarts: RestartPolicy = RestartPolicy(), job_number: int = 1) -> List[str]:
    """The launch directory, job.json and the sbatch scripts; returns the scripts' paths, the counter's first.
    `job_number`: which of the run's jobs this one is (1 for the first, the launcher's)."""
    sizes = {label: len(nodes) for label, nodes in program.groups.items()}
    spec.check_program(cluster.PROGRAM_GROUPS, need_hosts=False)
    launch_dir = write_launch(program, spec, run_dir, launch_index, restarts)
    with open(os.path.join(launch_dir, JOB_FILE), "w") as file:
        json.dump({"groups": sizes, "run_dir": os.path.abspath(run_dir), "launch_index": launch_index,
                   "python": sys.executable, "job_name": job_name, "job_number": job_number,
                   "max_jobs": spec.slurm.max_jobs}, file, indent=2)
    os.makedirs(RunPaths(run_dir).logs_dir(launch_index), exist_ok=True)  # sbatch writes the job's output there
    paths = []
    for name, script in sbatch_scripts(spec, launch_dir, run_dir, job_name):
        paths.append(os.path.join(launch_dir, name))
        with open(paths[-1], "w") as file:
            file.write(script)
    return paths


def submit(script_paths: List[str], environ=None) -> List[str]:
    """Submits the scripts with sbatch, every one after the first once the first has started
    (it runs the counter); returns the job ids."""
    job_ids = []
    for path in script_paths:
        dependency = [f"--dependency=after:{job_ids[0]}"] if job_ids else []
        result = subprocess.run(["sbatch", "--parsable", *dependency, path], capture_output=True, text=True,
                                env=environ)
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


class JobChain:
    """A run's heterogeneous jobs, one after another, as `launch.runtime.watch` sees one process:
    `poll()` follows the run into each job that goes on with it (jobs.jsonl), and gives the last
    one's code once it has ended and no other took over."""

    def __init__(self, run_dir: str, job_id: str):
        self._run_dir = run_dir
        self.job = Job(job_id)

    def poll(self) -> Optional[int]:
        code = self.job.poll()
        if code is None:
            return None
        latest = current_job(self._run_dir)
        if latest is not None and latest["job_id"] != self.job.job_id:
            self.job = Job(latest["job_id"])
            return None
        return code


def cancel(job_ids: List[str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True)
