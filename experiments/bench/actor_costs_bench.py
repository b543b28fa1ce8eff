"""Where an actor's time goes: the environment step alone vs inside the actor's loop, part by part.

In one process, blocks of two kinds alternate, so that machine noise hits both alike:
- alone: Relay's environment stepped with a fixed action, nothing else in between;
- the actor's loop: the program's own actor (`launch.loops.actor.Actor`, default-size
  policy, `envs_per_actor` environments) writing n-step items into a live Reverb
  server (in its own process, as in the program) and recording its experience;
  the actor times each part of its step (policy, step, write, record) itself.
Figures are µs per environment step, medians over blocks. `step_in_loop` against
`step_alone` is what the other parts cost the physics (caches they evict), on top
of their own time. With pixel observations (`--preset=pixels_small`, or `--set
pixels.height=64 ...`) the step includes rendering, and a third kind of block
times the rendering of one observation frame alone.
"""

import argparse
import dataclasses
import multiprocessing
import platform
import statistics
import tempfile
import time

import numpy as np

from experiments import results_io


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="walker:walk", help="task, 'domain:task'")
    parser.add_argument("--envs_per_actor", default="1,4,8", help="one value or a comma list")
    parser.add_argument("--steps_per_block", type=int, default=2000)
    parser.add_argument("--blocks", type=int, default=8, help="timed blocks of each kind, per envs_per_actor value")
    parser.add_argument("--preset", default="default", help="train's --preset for the actor's config")
    parser.add_argument("--set", action="append", default=[], help="config override, as train's --set")
    parser.add_argument("--out", default=None, help="JSON path (default runs/bench/actor_costs-<task>-<time>.json)")


def _serve_replay(environment, ports, stop) -> None:
    """A Reverb server with the program's online table (no rate limiter) until `stop` is set."""
    import reverb

    import environments
    import replay

    config = replay.ReplayConfig(samples_per_insert=None)
    server = reverb.Server([replay.make_online_table(config, environments.environment_spec(environment))])
    ports.put(server.port)
    stop.wait()
    server.stop()


def _config(args, num_envs: int = 1, run_dir: str = "unused"):
    from experiments import configs

    return configs.make_experiment_config(agent="mpo", task=args.env, run_dir=run_dir, envs_per_actor=num_envs,
                                          preset=args.preset, overrides=args.set)


def _make_actor(args, num_envs: int, address: str, record_dir: str):
    """The program's actor (launch.loops.actor.Actor) with the preset's policy, writing to `address`."""
    import reverb

    import environments
    from launch.loops.actor import Actor
    from launch.nodes.actor import PolicyServer

    config = _config(args, num_envs, record_dir)
    return Actor(config, 0, reverb.Client(address), PolicyServer(config, environments.environment_spec(config.environment)))


def _run_block(actor, env_steps: int) -> dict:
    """µs per env step of each part of the actor's step over about `env_steps` steps."""
    from launch.loops.actor import PARTS

    before, steps_before = dict(actor.part_seconds), actor.steps
    actor.run(env_steps)
    taken = actor.steps - steps_before
    return {part: 1e6 * (actor.part_seconds[part] - before[part]) / taken for part in PARTS}


def _step_alone(env, action, steps: int) -> float:
    """µs per step of `env` with a fixed action, resetting at episode ends."""
    step = env.step
    start = time.perf_counter()
    for _ in range(steps):
        if step(action).last():
            env.reset()
    return 1e6 * (time.perf_counter() - start) / steps


def _render_alone(env, pixels, renders: int) -> float:
    """µs per observation frame rendered, with nothing else in between."""
    start = time.perf_counter()
    for _ in range(renders):
        env.render(pixels.height, pixels.width, pixels.camera_id, shadows=pixels.shadows)
    return 1e6 * (time.perf_counter() - start) / renders


def measure(args, num_envs: int, address: str, steps_per_block: int, blocks: int) -> dict:
    import environments
    from launch.loops.actor import PARTS

    environment = _config(args).environment
    alone_env = environments.make_environment(dataclasses.replace(environment, seed=0))
    action = np.zeros(alone_env.action_spec().shape, np.float32)
    alone_env.reset()
    with tempfile.TemporaryDirectory() as record_dir:
        actor = _make_actor(args, num_envs, address, record_dir)
        actor.run(4 * num_envs)  # compiles the policy
        alone, parts, renders = [], [], []
        for _ in range(blocks):
            alone.append(_step_alone(alone_env, action, steps_per_block))
            parts.append(_run_block(actor, steps_per_block))
            if environment.pixels is not None:
                renders.append(_render_alone(alone_env, environment.pixels, steps_per_block))
        actor.close()
    alone_env.close()
    totals = [sum(block.values()) for block in parts]
    result = {"envs_per_actor": num_envs, "step_alone_us": statistics.median(alone),
              "loop_total_us": statistics.median(totals),
              "alone_over_loop": statistics.median([a / t for a, t in zip(alone, totals)])}
    if renders:
        result["render_alone_us"] = statistics.median(renders)
        result["render_alone_over_loop"] = statistics.median([r / t for r, t in zip(renders, totals)])
    for part in PARTS:
        result[f"{part}_us"] = statistics.median([block[part] for block in parts])
    result["blocks"] = {"step_alone_us": alone, "loop_parts_us": parts}
    return result


def run(args: argparse.Namespace) -> int:
    from experiments.bench.actor_bench import parse_envs_per_actor

    settings = parse_envs_per_actor(args.envs_per_actor)
    context = multiprocessing.get_context("spawn")
    ports, stop = context.Queue(), context.Event()
    server = context.Process(target=_serve_replay, args=(_config(args).environment, ports, stop), daemon=True)
    server.start()
    try:
        address = f"localhost:{ports.get(timeout=120)}"
        results = [measure(args, count, address, args.steps_per_block, args.blocks) for count in settings]
    finally:
        stop.set()
        server.join(timeout=30)
    name = f"actor_costs-{args.env.replace(':', '_')}"
    data = {"benchmark": "actor_costs", "task": args.env, "preset": args.preset, "set": args.set,
            "environment": dataclasses.asdict(_config(args).environment), "steps_per_block": args.steps_per_block,
            "blocks": args.blocks, "settings": results,
            "machine": {"python": platform.python_version(), "processor": platform.processor(),
                        "node": platform.node(), "cpu": results_io.cpu_name()},
            "time_utc": results_io.timestamp()}
    path = results_io.write_json_exclusive(data, results_io.bench_output_path(name, args.out))
    print(f"task {args.env}: µs per env step, medians of {args.blocks} blocks of {args.steps_per_block} steps")
    print("  envs  step alone | in the loop: policy   step  write  record  total | alone/loop")
    for r in results:
        print(f"  {r['envs_per_actor']:4d}  {r['step_alone_us']:10.1f} |   {r['policy_us']:17.1f} {r['step_us']:6.1f} "
              f"{r['write_us']:6.1f} {r['record_us']:7.1f} {r['loop_total_us']:6.1f} | {r['alone_over_loop']:.3f}")
    for r in results:
        if "render_alone_us" in r:
            print(f"  {r['envs_per_actor']:4d}  rendering one frame alone: {r['render_alone_us']:.1f} µs; "
                  f"alone/loop {r['render_alone_over_loop']:.3f} (env steps/s: loop {1e6 / r['loop_total_us']:.1f}, "
                  f"rendering alone {1e6 / r['render_alone_us']:.1f})")
    print(f"wrote {path}")
    return 0
