"""One actor inside the program vs raw dm_control: env steps/s on the same task.

The actor runs in the acting program (see experiments/bench/acting.py): it steps its
environment through Relay's wrapper, picks each action with the jitted default-size
policy and inserts n-step transitions into a live Reverb server. Raw dm_control is
measured in this process before and after the program, with random actions.
Figures are medians: the actor's over its episodes (the first left out), raw over blocks.
"""

import argparse
import platform
import statistics

from experiments import results_io
from experiments.bench import acting


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="walker:walk", help="task, 'domain:task'")
    parser.add_argument("--max_env_steps", type=int, default=100_000, help="steps the actor takes")
    parser.add_argument("--out", default=None, help="JSON path (default runs/bench/actor-<task>-<time>.json)")


def run(args: argparse.Namespace) -> int:
    name = f"actor-{args.env.replace(':', '_')}-{results_io.timestamp()}"
    raw_before = acting.raw_steps_per_s(args.env, seed=0)
    program = acting.run_acting_program(args.env, 1, args.max_env_steps, str(results_io.DEFAULT_BENCH_DIR / name))
    raw_after = acting.raw_steps_per_s(args.env, seed=0)
    raw = statistics.median(raw_before + raw_after)
    actor = program["actor_episode_steps_per_s_median"][0]
    result = {
        "benchmark": "actor",
        "task": args.env,
        "raw_steps_per_s_median": raw,
        "raw_steps_per_s": raw_before + raw_after,
        "actor_steps_per_s_median": actor,
        "actor_over_raw": actor / raw,
        "program": program,
        "machine": {"python": platform.python_version(), "processor": platform.processor(), "node": platform.node()},
        "time_utc": results_io.timestamp(),
    }
    path = results_io.write_json_exclusive(result, results_io.bench_output_path(name, args.out))
    print(f"task {args.env}: one actor in the program, {args.max_env_steps} steps")
    print(f"  raw dm_control        {raw:10.0f} steps/s (median of {len(result['raw_steps_per_s'])} blocks)")
    print(f"  actor in the program  {actor:10.0f} steps/s (median of {len(program['actor_episode_steps_per_s'][0])} episodes)")
    print(f"  actor / raw           {actor / raw:10.3f}")
    print(f"wrote {path}")
    return 0
