"""Total env steps/s of the program's actors with 1, 2, 4, ... actor processes.

Each count runs the acting program (see experiments/bench/acting.py) for the same
step budget; the total rate is taken over the steady part of each run (from 20% of
the budget on), from the monitor's progress rows.
"""

import argparse
import os
import platform

from experiments import results_io
from experiments.bench import acting


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="walker:walk", help="task, 'domain:task'")
    parser.add_argument("--num_actors", default="1,2,4", help="comma-separated actor counts")
    parser.add_argument("--max_env_steps", type=int, default=150_000, help="total steps per count")
    parser.add_argument("--out", default=None, help="JSON path (default runs/bench/scaling-<task>-<time>.json)")


def run(args: argparse.Namespace) -> int:
    counts = [int(part) for part in args.num_actors.split(",") if part]
    if not counts or min(counts) < 1:
        raise SystemExit(f"--num_actors={args.num_actors}: expected comma-separated counts >= 1, e.g. 1,2,4.")
    name = f"scaling-{args.env.replace(':', '_')}-{results_io.timestamp()}"
    bench_dir = results_io.DEFAULT_BENCH_DIR / name
    runs = [acting.run_acting_program(args.env, n, args.max_env_steps, str(bench_dir / f"actors_{n}")) for n in counts]
    result = {
        "benchmark": "scaling",
        "task": args.env,
        "cpu_count": os.cpu_count(),
        "runs": runs,
        "machine": {"python": platform.python_version(), "processor": platform.processor(), "node": platform.node()},
        "time_utc": results_io.timestamp(),
    }
    path = results_io.write_json_exclusive(result, results_io.bench_output_path(name, args.out))
    base = runs[0]["total_env_steps_per_s"] / runs[0]["num_actors"]
    print(f"task {args.env}: {os.cpu_count()} CPU cores, {args.max_env_steps} env steps per count")
    print("  actors  total steps/s  per actor  vs linear")
    for run_result in runs:
        n, total = run_result["num_actors"], run_result["total_env_steps_per_s"]
        print(f"  {n:6d}  {total:13.0f}  {total / n:9.0f}  {total / (base * n):9.2f}")
    print(f"wrote {path}")
    return 0
