"""Where each run of a sweep stands, read from its directory and asked of whatever runs it.

    new         no run directory yet (or an empty one)
    going       a launcher holds its claim, its SLURM job is queued or running, or its counter
                answers: it is never started a second time
    finished    its summary reaches the step budget the spec gives it
    unfinished  stopped, killed, failed or time-limited before its budget: resumed from its
                newest checkpoint
    broken      a non-empty directory that is not a run: left alone, reported
"""

import dataclasses
import os
import shutil
from typing import Optional

from experiments.sweep.spec import PlannedRun
from experiments.sweep.sweep_dir import SweepDir, claimed
from launch.rundir import summary
from launch.rundir.jobs import current_job
from launch.rundir.jsonio import read_json
from launch.rundir.paths import JOB_ID_FILE, RunPaths

NEW, GOING, FINISHED, UNFINISHED, BROKEN = "new", "going", "finished", "unfinished", "broken"


@dataclasses.dataclass(frozen=True)
class RunStatus:
    state: str
    detail: str = ""  # why going (claim, job, counter) or unfinished (the stop reason, or killed)
    env_steps: Optional[int] = None
    latest_eval: Optional[dict] = None  # the evaluator's newest row
    final_return: Optional[float] = None  # a finished run's final evaluation


def counter_of(run_dir: str) -> Optional[str]:
    """The run's counter's address while it answers as this run's."""
    from launch.runtime.progress import running_counter

    return running_counter(run_dir)


def slurm_jobs(run_dir: str) -> list:
    """The SLURM jobs of the run's latest launch (its job_id file) and the job it has gone on in
    (jobs.jsonl)."""
    jobs = []
    launch_dir = RunPaths(run_dir).latest_launch_dir()
    job = current_job(run_dir)
    if job is not None:
        jobs.append(job["job_id"])
    try:
        with open(os.path.join(launch_dir or "", JOB_ID_FILE)) as file:
            jobs += [job_id for job_id in file.read().split() if job_id not in jobs]
    except OSError:
        pass
    return jobs


# States in which a job may still run the program (requeued, held, or failed and not yet
# requeued): its run is not started again until SLURM has let the job go.
_SLURM_NOT_OVER = ("PREEMPTED", "NODE_FAIL", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "STOPPED")


def slurm_job_going(job_id: str) -> Optional[str]:
    """The job's state while it may still run (None once it is over or SLURM has forgotten it).
    When SLURM cannot be asked (scontrol missing or failing), the job counts as going."""
    import subprocess

    from launch.runtime.slurm_submit import ACTIVE_STATES

    if not shutil.which("scontrol"):
        return "unknown (no scontrol here)"
    result = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    if result.returncode != 0:
        return None if "Invalid job id" in result.stderr + result.stdout else "unknown (scontrol failed)"
    state = next((field.split("=", 1)[1] for field in result.stdout.split() if field.startswith("JobState=")), None)
    return state if state in ACTIVE_STATES + _SLURM_NOT_OVER else None


def _going_elsewhere(run_dir: str) -> Optional[str]:
    """Why the run is going without a claim here: its SLURM job may still run, or its counter answers."""
    for job_id in slurm_jobs(run_dir):
        state = slurm_job_going(job_id)
        if state:
            return f"SLURM job {job_id} {state}"
    address = counter_of(run_dir)
    return f"its counter answers at {address}" if address else None


def run_status(sweep: SweepDir, run: PlannedRun, probe: bool = True) -> RunStatus:
    """`run`'s state. `probe`: also ask SLURM and the run's counter whether a run with no claim
    here is going (slower; a runner skips it for runs it launched itself)."""
    run_dir = sweep.run_dir(run)
    if not os.path.isdir(run_dir) or not os.listdir(run_dir):
        return RunStatus(GOING, "its launcher is starting it") if claimed(sweep.claim_path(run)) else RunStatus(NEW)
    paths = RunPaths(run_dir)
    if not os.path.isfile(paths.config):
        if claimed(sweep.claim_path(run)):
            return RunStatus(GOING, "its launcher is starting it")
        return RunStatus(BROKEN, f"{run_dir} holds files but no config.json; it is left as it is")
    result = read_json(paths.summary) or {}
    counts = read_json(paths.counts) or {}
    rows = summary.evaluations(run_dir)
    latest = rows[-1] if rows else None
    env_steps = max(int(result.get("env_steps", 0)), int(counts.get("actor_steps", 0))) or None
    if result.get("env_steps", 0) >= run.max_env_steps:
        return RunStatus(FINISHED, "", env_steps, latest, result.get("final_eval_return"))
    if claimed(sweep.claim_path(run)):
        return RunStatus(GOING, "its launcher holds the claim", env_steps, latest)
    elsewhere = _going_elsewhere(run_dir) if probe else None
    if elsewhere:
        return RunStatus(GOING, elsewhere, env_steps, latest)
    # As --resume judges it: a run killed between its last steps and its summary is done too.
    if (env_steps or 0) >= run.max_env_steps:
        return RunStatus(FINISHED, "killed at its end, before its summary", env_steps, latest)
    # The summary is the latest launch's when it counts what the counter saved last.
    stopped = result and int(result.get("env_steps", -1)) >= int(counts.get("actor_steps", 0))
    detail = f"stopped: {result.get('stop_reason') or 'no reason saved'}" if stopped else "killed (no summary)"
    return RunStatus(UNFINISHED, detail, env_steps, latest)
