"""experiments.sweep status and stop: where each run stands, and stopping all of them cleanly."""

import sys
import time
from typing import Dict, List

from experiments.sweep.spec import PlannedRun
from experiments.sweep.state import (GOING, RunStatus, counter_of, run_status, slurm_job_going,
                                     slurm_jobs)
from experiments.sweep.sweep_dir import SweepDir

STOP_REASON = "python -m experiments.sweep stop"


def statuses(sweep: SweepDir, runs: List[PlannedRun]) -> Dict[PlannedRun, RunStatus]:
    return {run: run_status(sweep, run) for run in runs}


def format_status(sweep: SweepDir, runs: List[PlannedRun]) -> str:
    from experiments.sweep.runner import count_states

    states = statuses(sweep, runs)
    header = ("run", "state", "env steps", "newest evaluation", "")
    rows = [header]
    for run, status in states.items():
        latest = status.latest_eval
        rows.append((f"{run.wave}/{run.name}", status.state,
                     f"{status.env_steps or 0:,} / {run.max_env_steps:,}",
                     f"{latest['mean_return']:.1f} @ {int(latest['env_steps']):,}" if latest else "-",
                     status.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    stop = sweep.stop_requested()
    return "\n".join([f"Sweep {sweep.root}: {count_states(states)}"
                      + (f"; a stop was asked at {time.strftime('%H:%M:%S', time.localtime(stop['time']))}"
                         if stop else "")] + lines)


def _cancel_pending_jobs(run_dir: str) -> None:
    """A queued SLURM job has no counter to ask: it is cancelled (nothing of it ran)."""
    from launch.runtime.slurm_submit import cancel

    cancel([job for job in slurm_jobs(run_dir) if slurm_job_going(job) == "PENDING"])


def stop_sweep(sweep: SweepDir, runs: List[PlannedRun], wait_s: float) -> int:
    """Asks the sweep's runners to start nothing more (stop.json) and every run going to stop
    through its counter, as a Ctrl-C of its launcher does; waits up to `wait_s` for them. 0 once
    none is going, 1 (naming them) if some still are."""
    from launch.nodes import rpc

    sweep.request_stop(STOP_REASON)
    deadline = time.time() + wait_s
    asked = set()
    while True:
        going = [run for run, status in statuses(sweep, runs).items() if status.state == GOING]
        if not going:
            print(f"Stopped: no run of {sweep.root} is going. python -m experiments.sweep run {sweep.root} "
                  "goes on from where each run stopped.")
            return 0
        for run in going:
            run_dir = sweep.run_dir(run)
            if rpc.ask_to_stop(counter_of(run_dir), STOP_REASON):
                if run not in asked:
                    print(f"asked {run.wave}/{run.name} to stop")
                    asked.add(run)
            else:
                _cancel_pending_jobs(run_dir)
        if time.time() >= deadline:
            print(f"error: still going after {wait_s:.0f} s: {', '.join(f'{r.wave}/{r.name}' for r in going)}",
                  file=sys.stderr)
            return 1
        time.sleep(1.0)
