"""RUN_DIR/jobs.jsonl: the SLURM jobs a run went through, one after another (a job nearing its
time limit or losing a host goes on in a continuation job; a requeued job starts again),
written by the launcher (`launch.runtime.slurm_submit`) and the job driver (`launch.runtime.slurm`), read by the launcher's
progress line and `experiments.runs`."""

import json
import time
from typing import List, Optional

from launch.rundir.jsonio import read_jsonl
from launch.rundir.paths import RunPaths


def note_job(run_dir: str, event: str, **fields) -> None:
    """One line of RUN_DIR/jobs.jsonl: a job submitted, started (again, if requeued), gone on in
    another job, or ended for good."""
    with open(RunPaths(run_dir).jobs, "a") as file:
        file.write(json.dumps({"event": event, "time": time.time(), **fields}) + "\n")


def run_jobs(run_dir: str) -> List[dict]:
    """The lines of RUN_DIR/jobs.jsonl, oldest first ([] for a run that never ran under SLURM)."""
    return read_jsonl(RunPaths(run_dir).jobs)


def current_job(run_dir: str) -> Optional[dict]:
    """The job the run is in now, or was in last: job_id, job_number, max_jobs, launch_index."""
    current = None
    for record in run_jobs(run_dir):
        if "job_id" in record and "job_number" in record:
            current = record
    return current
