"""The learner's loop fed from Reverb vs on synthetic batches: SGD steps/s, same learner, same process.

A Reverb server in this process holds n-step transitions that a random policy
collected on the task (through Relay's environment and n-step writer). Both sides run
`launch.loops.learner.LearnerLoop`, the learner node's loop (update, publishing,
metrics): the Reverb side on the node's pipeline (tf.data sampling, conversion to
`agents.Transition`, `replay.DevicePrefetcher`), the synthetic side on one batch
already on the device. Timing alternates blocks of the two; figures are medians over
blocks and the median of paired ratios.
"""

import argparse
import platform
import statistics
import tempfile
import threading
import time

import jax
import reverb

import agents
import environments
import replay
from experiments import configs, results_io
from launch.loops.episodes import EpisodeRunner, uniform_random_policy
from launch.loops.learner import LearnerLoop, initial_state, replay_batches


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", default="mog", choices=list(agents.AGENT_HEADS))
    parser.add_argument("--env", default="walker:walk", help="task whose transitions fill the table")
    parser.add_argument("--episodes", type=int, default=20, help="random-policy episodes inserted")
    parser.add_argument("--steps_per_block", type=int, default=50)
    parser.add_argument("--blocks", type=int, default=25, help="timed blocks per side")
    parser.add_argument("--out", default=None, help="JSON path (default runs/bench/datapath-<time>.json)")


def fill_table(server: reverb.Server, task: str, episodes: int, config: replay.ReplayConfig) -> None:
    env = environments.make_environment(environments.EnvironmentConfig(task, seed=0))
    writer = replay.make_writer(reverb.Client(f"localhost:{server.port}"), config, replay.ONLINE_TABLE)
    EpisodeRunner(env, uniform_random_policy(env.action_spec(), seed=0), [writer]).run(episodes)
    writer.flush()
    writer.close()
    env.close()


class FixedBatch:
    """The same device batch every time, as a LearnerLoop's batches."""

    def __init__(self, batch):
        self._batch = batch

    def next(self, timeout=None):
        return self._batch

    def close(self):
        pass


def bench_config(agent: str, task: str, run_dir: str):
    """The learner benchmarks' experiment: Acme's settings, no rate limiter, no checkpoints."""
    return configs.make_experiment_config(
        agent=agent, task=task, run_dir=run_dir, preset="acme", overrides=[
            "replay.samples_per_insert=none", "experiment.checkpoint_every_learner_steps=1000000000",
            "experiment.checkpoint_every_minutes=1000000"])


def time_steps(loop: LearnerLoop, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        loop.step()
    jax.block_until_ready(loop.state)
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> int:
    run_root = tempfile.mkdtemp(prefix="relay-datapath-")
    experiment = lambda side: bench_config(args.agent, args.env, f"{run_root}/{side}")  # noqa: E731
    config = experiment("reverb")
    spec = environments.environment_spec(config.environment)
    server = reverb.Server([replay.make_online_table(config.replay, spec)], port=None)
    fill_table(server, args.env, args.episodes, config.replay)
    table_size = reverb.Client(f"localhost:{server.port}").server_info()[replay.ONLINE_TABLE].current_size

    learner = agents.Learner(config.learner, spec.observations.shape, spec.actions.shape[0])
    learner.check_batch_size(config.replay.batch_size)
    stop = threading.Event()
    batches = replay_batches(config, replay.layout_of(spec), f"localhost:{server.port}", learner, 0, stop)
    loops = {"reverb": LearnerLoop(config, learner, initial_state(config, learner), batches),
             "synthetic": LearnerLoop(experiment("synthetic"), learner, initial_state(config, learner),
                                      FixedBatch(batches.next(timeout=60.0)))}
    time_steps(loops["reverb"], args.steps_per_block)  # compile, fill the pipeline
    time_steps(loops["synthetic"], 5)

    reverb_rates, synthetic_rates, ratios = [], [], []
    for block in range(args.blocks):
        order = ("reverb", "synthetic") if block % 2 == 0 else ("synthetic", "reverb")
        seconds = {side: time_steps(loops[side], args.steps_per_block) for side in order}
        reverb_rates.append(args.steps_per_block / seconds["reverb"])
        synthetic_rates.append(args.steps_per_block / seconds["synthetic"])
        ratios.append(seconds["synthetic"] / seconds["reverb"])
    stop.set()
    for loop in loops.values():
        loop.settle()
        loop.close()
    server.stop()

    result = {
        "benchmark": "datapath",
        "agent": args.agent,
        "task": args.env,
        "table_size": table_size,
        "batch_size": config.replay.batch_size,
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
    print(f"{args.agent} learner loop, batch {config.replay.batch_size}, table of {table_size} {args.env} transitions; "
          f"{args.blocks} blocks of {args.steps_per_block} steps each side")
    print(f"  fed from Reverb    {result['reverb_steps_per_s_median']:8.1f} SGD steps/s (median)")
    print(f"  synthetic batches  {result['synthetic_steps_per_s_median']:8.1f} SGD steps/s (median)")
    print(f"  Reverb / synthetic {result['reverb_over_synthetic_median']:8.3f} (median of paired blocks)")
    print(f"wrote {path}")
    return 0
