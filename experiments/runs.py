"""The runs index: every run under a root, what it was and what it left.

    python -m experiments.runs list [--root=runs] [--env=cartpole:swingup] [--json]

One line per run directory (a directory with a config.json): id (its path under the
root), task, agent, seed, env steps, final eval return, its newest checkpoint
(learner step and UTC time), recorded-experience size, for a SLURM run the job it is in
("2 of 10 (4711)": its second job of at most ten), and whether it replayed earlier runs
(RaE), and which.
"""

import argparse
import json
import os
import sys
import time
from typing import List, Optional

from launch.rundir.checkpoints import checkpoints_dir, list_steps
from launch.rundir.jobs import current_job
from launch.rundir.jsonio import read_json
from launch.rundir.paths import RunPaths


def _directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _latest_checkpoint(run_dir: str) -> Optional[dict]:
    """The newest finished checkpoint's learner step and time (not loaded: listing stays fast)."""
    steps = list_steps(run_dir)
    if not steps:
        return None
    saved = os.path.getmtime(os.path.join(checkpoints_dir(run_dir), str(steps[-1])))
    return {"learner_step": steps[-1], "saved_at_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(saved)),
            "count": len(steps)}


def _slurm_job(run_dir: str) -> Optional[dict]:
    job = current_job(run_dir)
    return None if job is None else {"job_id": job["job_id"], "number": job["job_number"], "of": job["max_jobs"]}


def find_runs(root: str) -> List[dict]:
    """A dict per run directory under `root`, sorted by id."""
    runs = []
    for directory, subdirectories, files in os.walk(root):
        if "config.json" not in files:
            continue
        subdirectories[:] = []  # a run's own subdirectories hold no runs
        paths = RunPaths(directory)
        config = read_json(paths.config) or {}
        summary = read_json(paths.summary) or {}
        counts = read_json(paths.counts) or {}
        rae = config.get("rae") or None
        experience_dir = os.path.join(directory, "experience")
        runs.append({
            "id": os.path.relpath(directory, root),
            "path": os.path.abspath(directory),
            "task": (config.get("environment") or {}).get("task"),
            "agent": config.get("agent"),
            "seed": config.get("seed"),
            # A run still going (or killed) has no summary yet: the counter's last saved totals.
            "env_steps": summary.get("env_steps", counts.get("actor_steps")),
            "final_return": summary.get("final_eval_return"),
            "checkpoint": _latest_checkpoint(directory),
            "data_bytes": _directory_bytes(experience_dir) if os.path.isdir(experience_dir) else 0,
            "rae_from": list(rae["runs"]) if rae else [],
            # A SLURM run that goes on across jobs: the job it is in (or ended in), k of at most n.
            "slurm_job": _slurm_job(directory),
        })
    return sorted(runs, key=lambda run: run["id"])


def _size(num_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024


def format_table(runs: List[dict], root: str) -> str:
    header = ("id", "task", "agent", "seed", "env steps", "final return", "checkpoint", "data", "SLURM job", "RaE from")
    rows = [header]
    for run in runs:
        rae = ", ".join(os.path.relpath(path, os.path.abspath(root)) for path in run["rae_from"]) or "-"
        rows.append((run["id"], run["task"] or "?", run["agent"] or "?", str(run["seed"]),
                     f"{run['env_steps']:,}" if run["env_steps"] is not None else "-",
                     f"{run['final_return']:.1f}" if run["final_return"] is not None else "-",
                     (f"{run['checkpoint']['learner_step']:,} @ {run['checkpoint']['saved_at_utc']}"
                      if run["checkpoint"] else "-"),
                     _size(run["data_bytes"]),
                     (f"{run['slurm_job']['number']} of {run['slurm_job']['of']} ({run['slurm_job']['job_id']})"
                      if run["slurm_job"] else "-"), rae))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.runs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="every run under --root")
    listing.add_argument("--root", default="runs", help="directory searched for runs (default runs/)")
    listing.add_argument("--env", default=None, help="only runs of this task, 'domain:task'")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.root):
        print(f"error: --root={args.root} is not a directory.", file=sys.stderr)
        return 2
    runs = [run for run in find_runs(args.root) if args.env is None or run["task"] == args.env]
    print(json.dumps(runs, indent=2) if args.json else format_table(runs, args.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
