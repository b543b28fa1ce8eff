"""One actor inside the program vs raw dm_control: env steps/s on the same task.

The actor runs in the acting program (see experiments/bench/acting.py): it steps its
environments through Relay's wrapper, picks actions with the jitted default-size
policy and inserts n-step transitions into a live Reverb server. It is measured with
each `--envs_per_actor` value in turn, in one run. Raw dm_control (one environment,
random actions) is measured in this process before and after the programs.
Figures are medians: the actor's over its episodes (its environments' first ones
left out), raw over blocks.
"""

import argparse
import os
import platform
import statistics

from experiments import results_io
from experiments.bench import acting


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="walker:walk", help="task, 'domain:task'")
    parser.add_argument("--envs_per_actor", default="1,4,8", help="one value or a comma list: one program each")
    parser.add_argument("--max_env_steps", type=int, default=100_000, help="steps the actor takes in each program")
    parser.add_argument("--out", default=None, help="JSON path (default runs/bench/actor-<task>-<time>.json)")


def parse_envs_per_actor(text: str) -> list:
    try:
        values = [int(value) for value in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise SystemExit(f"--envs_per_actor={text!r}: give positive integers separated by commas, e.g. 1,8.")
    return values


def run(args: argparse.Namespace) -> int:
    settings = parse_envs_per_actor(args.envs_per_actor)
    name = f"actor-{args.env.replace(':', '_')}"
    run_root = str(results_io.DEFAULT_BENCH_DIR / f"{name}-{results_io.timestamp()}")
    raw_before = acting.raw_steps_per_s(args.env, seed=0)
    programs = [acting.run_acting_program(args.env, 1, args.max_env_steps, os.path.join(run_root, f"envs_{count}"),
                                          envs_per_actor=count)
                for count in settings]
    raw_after = acting.raw_steps_per_s(args.env, seed=0)
    raw = statistics.median(raw_before + raw_after)
    actors = [{"envs_per_actor": program["envs_per_actor"],
               "actor_steps_per_s_median": program["actor_episode_steps_per_s_median"][0],
               "actor_over_raw": program["actor_episode_steps_per_s_median"][0] / raw,
               "episodes_measured": len(program["actor_episode_steps_per_s"][0])} for program in programs]
    result = {
        "benchmark": "actor",
        "task": args.env,
        "raw_steps_per_s_median": raw,
        "raw_steps_per_s": raw_before + raw_after,
        "actors": actors,
        "programs": programs,
        "machine": {"python": platform.python_version(), "processor": platform.processor(), "node": platform.node(),
                    "cpus": os.cpu_count()},
        "time_utc": results_io.timestamp(),
    }
    path = results_io.write_json_exclusive(result, results_io.bench_output_path(name, args.out))
    print(f"task {args.env}: one actor in the program, {args.max_env_steps} steps per program")
    print(f"  raw dm_control                  {raw:8.0f} steps/s (median of {len(result['raw_steps_per_s'])} blocks)")
    for actor in actors:
        print(f"  actor, {actor['envs_per_actor']:3d} env(s)              {actor['actor_steps_per_s_median']:8.0f} steps/s "
              f"= {actor['actor_over_raw']:.3f} of raw (median of {actor['episodes_measured']} episodes)")
    print(f"wrote {path}")
    return 0
