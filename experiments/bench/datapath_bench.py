"""The learner's data path: how fast batches reach the device, and what that leaves a learner.

`--learner=real` (the default): the learner's loop fed from Reverb vs on synthetic batches,
SGD steps/s, same learner, same process. A Reverb server in this process holds n-step
transitions that a random policy collected on the task (through Relay's environment and
n-step writer). Both sides run `launch.loops.learner.LearnerLoop`, the learner node's loop
(update, publishing, metrics): the Reverb side on the node's pipeline (tf.data sampling,
conversion to `agents.Transition`, `replay.DevicePrefetcher`), the synthetic side on one
batch already on the device. Timing alternates blocks of the two; figures are medians over
blocks and the median of paired ratios.

The ceilings a fast (GPU) learner would meet, for each k of `--steps_per_call` (updates per
call, `experiment.learner_steps_per_call`: k batches sampled and sent to the device as one):
  --learner=none   the node's pipeline drained with no learning: batches of B delivered to
                   the device per second;
  --learner=cheap  the learner node's loop around a near-free jitted update (it sums the
                   batch's rewards, so the batch is used, and counts the step): updates/s,
                   publishing, metrics and the non-finite guard included.
With `--rae_ratio` each batch mixes that share from a second table (RaE), exactly per update.
Blocks alternate between the k values; figures are medians over blocks, ratios the median
of paired blocks, and "cores" the process's CPU time over wall time.
"""

import argparse
import dataclasses
import os
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
from launch.config import RaEConfig
from launch.loops.episodes import EpisodeRunner, uniform_random_policy
from launch.loops.learner import LearnerLoop, initial_state, replay_batches


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", default="mog", choices=list(agents.AGENT_HEADS))
    parser.add_argument("--env", default="walker:walk", help="task whose transitions fill the table")
    parser.add_argument("--episodes", type=int, default=20, help="random-policy episodes inserted")
    parser.add_argument("--steps_per_block", type=int, default=50)
    parser.add_argument("--blocks", type=int, default=25, help="timed blocks per side")
    parser.add_argument("--learner", default="real", choices=["real", "cheap", "none"],
                        help="real: Reverb vs synthetic batches; cheap / none: the ceilings (see above)")
    parser.add_argument("--steps_per_call", default="1,8", help="cheap / none: the k values compared")
    parser.add_argument("--rae_ratio", type=float, default=0.0, help="cheap / none: RaE's share of each batch")
    parser.add_argument("--out", default=None, help="JSON path (default runs/bench/datapath-<time>.json)")


def fill_table(server: reverb.Server, task: str, episodes: int, config: replay.ReplayConfig,
               table: str = replay.ONLINE_TABLE, seed: int = 0) -> None:
    env = environments.make_environment(environments.EnvironmentConfig(task, seed=seed))
    writer = replay.make_writer(reverb.Client(f"localhost:{server.port}"), config, table)
    EpisodeRunner(env, uniform_random_policy(env.action_spec(), seed=seed), [writer]).run(episodes)
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
    if args.learner != "real":
        return run_ceilings(args)
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


class CheapLearner:
    """A learner whose update costs next to nothing: it sums the batch's rewards (so the batch
    is used) and counts its steps; the rest (networks, shardings) is `learner`'s, so the loop
    publishes real acting parameters."""

    def __init__(self, learner: agents.Learner):
        self._learner = learner

        def update(state, batch):
            used = jax.numpy.sum(batch.reward)
            return state.replace(steps=state.steps + 1), {"nonfinite_updates": 0.0 * used, "reward_sum": used}

        def update_many(state, batches):
            steps, used = batches.reward.shape[0], jax.numpy.sum(batches.reward)
            return state.replace(steps=state.steps + steps), {
                "nonfinite_updates": 0.0 * used, "nonfinite_each": jax.numpy.zeros(steps), "reward_sum": used}

        self.update = jax.jit(update, donate_argnums=0)
        self.update_many = jax.jit(update_many, donate_argnums=0)

    def __getattr__(self, name):
        return getattr(self._learner, name)


class _Drain:
    """The pipeline alone: a step takes the next call's batches, on the device."""

    def __init__(self, batches, steps_per_call: int):
        self._batches, self.steps_per_call, self.steps = batches, steps_per_call, 0

    def step(self) -> bool:
        jax.block_until_ready(self._batches.next())
        self.steps += self.steps_per_call
        return True


def run_ceilings(args: argparse.Namespace) -> int:

    run_root = tempfile.mkdtemp(prefix="relay-datapath-")
    ks = [int(k) for k in args.steps_per_call.split(",")]
    config = bench_config(args.agent, args.env, f"{run_root}/k1")
    spec = environments.environment_spec(config.environment)
    tables = [replay.make_online_table(config.replay, spec)]
    if args.rae_ratio:
        tables.append(replay.make_online_table(config.replay, spec, name=replay.OFFLINE_TABLE))
    server = reverb.Server(tables, port=None)
    fill_table(server, args.env, args.episodes, config.replay)
    if args.rae_ratio:
        fill_table(server, args.env, max(1, args.episodes // 2), config.replay, table=replay.OFFLINE_TABLE, seed=1)
    sizes = {name: info.current_size for name, info in reverb.Client(f"localhost:{server.port}").server_info().items()}
    learner = agents.Learner(config.learner, spec.observations.shape, spec.actions.shape[0])
    stop = threading.Event()
    sides = {}
    for k in ks:
        side_config = dataclasses.replace(
            bench_config(args.agent, args.env, f"{run_root}/k{k}"), learner_steps_per_call=k,
            rae=RaEConfig(runs=("(this benchmark's second table)",), ratio=args.rae_ratio) if args.rae_ratio else None)
        batches = replay_batches(side_config, replay.layout_of(spec), f"localhost:{server.port}", learner, 0, stop)
        sides[k] = (_Drain(batches, k) if args.learner == "none" else
                    LearnerLoop(side_config, CheapLearner(learner), initial_state(side_config, learner), batches))
    updates_per_block = args.steps_per_block * max(ks)
    for side in sides.values():  # compile, fill the pipelines
        while side.steps < updates_per_block // 2:
            side.step()
    rates = {k: [] for k in ks}
    cores = {k: [] for k in ks}
    for block in range(args.blocks):
        for k in (ks if block % 2 == 0 else list(reversed(ks))):
            side, first = sides[k], sides[k].steps
            wall, cpu = time.perf_counter(), time.process_time()
            while side.steps - first < updates_per_block:
                side.step()
            if isinstance(side, LearnerLoop):
                jax.block_until_ready(side.state)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rates[k].append((side.steps - first) / wall)
            cores[k].append(cpu / wall)
    stop.set()
    for side in sides.values():
        if isinstance(side, LearnerLoop):
            side.settle()
            side.close()
        else:
            side._batches.close()
    server.stop()

    base = ks[0]
    cpu_name = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                    platform.processor())
    result = {
        "benchmark": "datapath_ceiling", "learner": args.learner, "agent": args.agent, "task": args.env,
        "batch_size": config.replay.batch_size, "rae_ratio": args.rae_ratio, "table_sizes": sizes,
        "updates_per_block": updates_per_block, "blocks": args.blocks, "cpu": cpu_name, "cores": os.cpu_count(),
        "per_k": {str(k): {
            "updates_per_s_median": statistics.median(rates[k]), "updates_per_s": rates[k],
            "transitions_per_s_median": statistics.median(rates[k]) * config.replay.batch_size,
            "cores_used_median": statistics.median(cores[k]),
            "updates_per_s_per_core_median": statistics.median(r / c for r, c in zip(rates[k], cores[k])),
            "over_k1_median": statistics.median(r / b for r, b in zip(rates[k], rates[base]))} for k in ks},
        "jax_backend": jax.default_backend(), "time_utc": results_io.timestamp(),
    }
    name = f"datapath_{args.learner}" + (f"_rae{args.rae_ratio:g}" if args.rae_ratio else "")
    path = results_io.write_json_exclusive(result, results_io.bench_output_path(name, args.out))
    what = "the pipeline drained, no learning" if args.learner == "none" else "the learner loop, a near-free update"
    print(f"{cpu_name} ({os.cpu_count()} cores); {what}; batch {config.replay.batch_size}"
          + (f", RaE share {args.rae_ratio:g}" if args.rae_ratio else "") + f"; tables {sizes}; "
          f"{args.blocks} blocks of {updates_per_block} updates per k")
    for k in ks:
        r = result["per_k"][str(k)]
        print(f"  k={k:<3} {r['updates_per_s_median']:9.0f} updates/s ({r['transitions_per_s_median'] / 1e3:7.0f}k "
              f"transitions/s), {r['cores_used_median']:.2f} cores, {r['updates_per_s_per_core_median']:8.0f} "
              f"updates/s per core; x{r['over_k1_median']:.2f} over k={base}")
    print(f"wrote {path}")
    return 0
