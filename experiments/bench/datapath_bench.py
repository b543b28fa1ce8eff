"""The learner fed from Reverb vs on synthetic batches: SGD steps/s, same learner, same process.

A Reverb server in this process holds n-step transitions that a random policy
collected on the task (through Relay's environment and n-step writer). The
Reverb side runs the learner node's pipeline: tf.data sampling, conversion to
`agents.Transition`, `replay.DevicePrefetcher`. The synthetic side updates on one
batch already on the device. Timing alternates blocks of the two; figures are
medians over blocks and the median of paired ratios.
"""

import argparse
import platform
import statistics
import time

import jax
import numpy as np
import reverb

import agents
import environments
import replay
from experiments import results_io


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", default="mog", choices=list(agents.AGENT_HEADS))
    parser.add_argument("--env", default="walker:walk", help="task whose transitions fill the table")
    parser.add_argument("--episodes", type=int, default=20, help="random-policy episodes inserted")
    parser.add_argument("--steps_per_block", type=int, default=50)
    parser.add_argument("--blocks", type=int, default=25, help="timed blocks per side")
    parser.add_argument("--out", default=None, help="JSON path (default runs/bench/datapath-<time>.json)")


def fill_table(server: reverb.Server, task: str, episodes: int, config: replay.ReplayConfig) -> environments.RelayEnvironment:
    env = environments.make_environment(environments.EnvironmentConfig(task, seed=0))
    client = reverb.Client(f"localhost:{server.port}")
    writer = replay.make_writer(client, config, replay.ONLINE_TABLE)
    rng = np.random.default_rng(0)
    action_shape = env.action_spec().shape
    for _ in range(episodes):
        timestep = env.reset()
        writer.add_first(timestep)
        while not timestep.last():
            action = rng.uniform(-1, 1, action_shape).astype(np.float32)
            timestep = env.step(action)
            writer.add(action, timestep)
    writer.flush()
    writer.close()
    return env


def _time_steps(update, state, next_batch, steps: int):
    start = time.perf_counter()
    for _ in range(steps):
        state, _ = update(state, next_batch())
    jax.block_until_ready(state)
    return state, time.perf_counter() - start


def run(args: argparse.Namespace) -> int:
    config = replay.ReplayConfig(samples_per_insert=None)
    env = environments.make_environment(environments.EnvironmentConfig(args.env, seed=0))
    spec = env.environment_spec
    server = reverb.Server([replay.make_online_table(config, spec)], port=None)
    fill_table(server, args.env, args.episodes, config)
    table_size = reverb.Client(f"localhost:{server.port}").server_info()[replay.ONLINE_TABLE].current_size

    learner = agents.Learner(agents.make_config(args.agent), spec.observations.shape[0], spec.actions.shape[0])
    learner.check_batch_size(config.batch_size)
    state = learner.init(jax.random.PRNGKey(0))
    dataset = replay.make_dataset(f"localhost:{server.port}", config, replay.TransitionLayout.of(spec))
    prefetcher = replay.DevicePrefetcher(replay.transitions(dataset), learner.batch_sharding,
                                         size=config.prefetch_batches)
    from_reverb = lambda: prefetcher.next(timeout=60.0)  # noqa: E731
    fixed = from_reverb()
    synthetic = lambda: fixed  # noqa: E731
    state, _ = _time_steps(learner.update, state, from_reverb, args.steps_per_block)  # compile, fill the pipeline
    state, _ = _time_steps(learner.update, state, synthetic, 5)

    reverb_rates, synthetic_rates, ratios = [], [], []
    for block in range(args.blocks):
        order = ("reverb", "synthetic") if block % 2 == 0 else ("synthetic", "reverb")
        seconds = {}
        for side in order:
            state, seconds[side] = _time_steps(learner.update, state, from_reverb if side == "reverb" else synthetic,
                                               args.steps_per_block)
        reverb_rates.append(args.steps_per_block / seconds["reverb"])
        synthetic_rates.append(args.steps_per_block / seconds["synthetic"])
        ratios.append(seconds["synthetic"] / seconds["reverb"])
    prefetcher.close()
    server.stop()

    result = {
        "benchmark": "datapath",
        "agent": args.agent,
        "task": args.env,
        "table_size": table_size,
        "batch_size": config.batch_size,
        "steps_per_block": args.steps_per_block,
        "blocks": args.blocks,
        "reverb_steps_per_s_median": statistics.median(reverb_rates),
        "synthetic_steps_per_s_median": statistics.median(synthetic_rates),
        "reverb_over_synthetic_median": statistics.median(ratios),
        "reverb_steps_per_s": reverb_rates,
        "synthetic_steps_per_s": synthetic_rates,
        "reverb_over_synthetic": ratios,
        "jax_backend": jax.default_backend(),
        "machine": {"python": platform.python_version(), "processor": platform.processor(), "node": platform.node()},
        "time_utc": results_io.timestamp(),
    }
    path = results_io.write_json_exclusive(result, results_io.bench_output_path(f"datapath-{args.agent}", args.out))
    print(f"{args.agent} learner, batch {config.batch_size}, table of {table_size} {args.env} transitions; "
          f"{args.blocks} blocks of {args.steps_per_block} steps each side")
    print(f"  fed from Reverb    {result['reverb_steps_per_s_median']:8.1f} SGD steps/s (median)")
    print(f"  synthetic batches  {result['synthetic_steps_per_s_median']:8.1f} SGD steps/s (median)")
    print(f"  Reverb / synthetic {result['reverb_over_synthetic_median']:8.3f} (median of paired blocks)")
    print(f"wrote {path}")
    return 0
