"""Environment stepping speed: raw dm_control vs Relay's wrapper, same task and seed.

Both step with the same random actions, drawn before timing (the raw side gets
them already in the task's bounds, so both simulate the same trajectory), auto-resetting at episode ends. Timing alternates short
blocks of the two, so that machine noise hits both alike; figures are medians over
blocks, and the ratio is the median of the per-pair ratios.
"""

import argparse
import platform
import statistics
import time

import numpy as np

import environments
from experiments import results_io


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="walker:walk", help="task, 'domain:task'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps_per_block", type=int, default=2000)
    parser.add_argument("--blocks", type=int, default=15, help="timed blocks per side")
    parser.add_argument("--out", default=None, help="JSON path (default runs/bench/env-<task>-<time>.json)")


def time_block(env, actions: np.ndarray) -> float:
    step = env.step
    start = time.perf_counter()
    for action in actions:
        step(action)
    return time.perf_counter() - start


def measure(task: str, seed: int, steps_per_block: int, blocks: int) -> dict:
    relay_env = environments.make_environment(environments.EnvironmentConfig(task, seed=seed))
    raw_env = environments.load_task(task, seed)
    rng = np.random.default_rng(seed)
    shape = (steps_per_block,) + relay_env.action_spec().shape
    relay_actions = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    # The same actions, so both sides simulate exactly the same trajectory.
    rescale = environments.ActionRescaler(raw_env.action_spec())
    raw_actions = np.stack([rescale(action).copy() for action in relay_actions])

    relay_env.reset()
    raw_env.reset()
    time_block(raw_env, raw_actions[:200])  # warm caches on both sides
    time_block(relay_env, relay_actions[:200])
    raw_rates, relay_rates, ratios = [], [], []
    for block in range(blocks):
        if block % 2 == 0:
            raw_seconds = time_block(raw_env, raw_actions)
            relay_seconds = time_block(relay_env, relay_actions)
        else:
            relay_seconds = time_block(relay_env, relay_actions)
            raw_seconds = time_block(raw_env, raw_actions)
        raw_rates.append(steps_per_block / raw_seconds)
        relay_rates.append(steps_per_block / relay_seconds)
        ratios.append(raw_seconds / relay_seconds)
    relay_env.close()
    raw_env.close()
    ratio = statistics.median(ratios)
    return {
        "benchmark": "env",
        "task": task,
        "seed": seed,
        "steps_per_block": steps_per_block,
        "blocks": blocks,
        "raw_steps_per_s_median": statistics.median(raw_rates),
        "relay_steps_per_s_median": statistics.median(relay_rates),
        "relay_over_raw_median": ratio,
        "wrapper_overhead_percent": 100.0 * (1.0 / ratio - 1.0),
        "raw_steps_per_s": raw_rates,
        "relay_steps_per_s": relay_rates,
        "relay_over_raw": ratios,
        "machine": {"python": platform.python_version(), "processor": platform.processor(), "node": platform.node()},
        "time_utc": results_io.timestamp(),
    }


def run(args: argparse.Namespace) -> int:
    result = measure(args.env, args.seed, args.steps_per_block, args.blocks)
    path = results_io.write_json_exclusive(result, results_io.bench_output_path(f"env-{args.env.replace(':', '_')}", args.out))
    print(f"task {result['task']}: {result['blocks']} blocks of {result['steps_per_block']} steps each side")
    print(f"  raw dm_control   {result['raw_steps_per_s_median']:10.0f} steps/s (median)")
    print(f"  Relay wrapper    {result['relay_steps_per_s_median']:10.0f} steps/s (median)")
    print(f"  Relay / raw      {result['relay_over_raw_median']:10.3f} (median of paired blocks)")
    print(f"  wrapper overhead {result['wrapper_overhead_percent']:9.1f} %  (time per step, relative to raw)")
    print(f"wrote {path}")
    return 0
