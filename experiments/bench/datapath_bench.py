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
The Reverb server runs in a process of its own, as the program's replay node does. Blocks
alternate between the sides (k, and with "k@w", w Reverb sampling workers: `replay.sampling_workers`); figures are medians over blocks, ratios the median of
paired blocks, "cores" each process's CPU time over wall time (the learner side's, the
server's), and "sampling alone" what the node's tf.data pipeline delivers inside TensorFlow
(no Python per batch, no conversion, no transfer). A side starts each block with its
prefetch buffers full (about 4 calls): keep blocks long (--steps_per_block) against that bias.
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
import tensorflow as tf

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
    parser.add_argument("--steps_per_call", default="1,8,8@2",
                        help="cheap / none: the sides compared, k[@sampling workers] (auto: Reverb's choice)")
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

    def close(self) -> None:
        self._batches.close()


def _serve(agent: str, task: str, with_offline: bool, connection) -> None:
    """The replay server in a process of its own, as the program's replay node is: its tables,
    its port sent back; it serves until told to stop."""
    config = bench_config(agent, task, tempfile.mkdtemp(prefix="relay-datapath-server-"))
    spec = environments.environment_spec(config.environment)
    tables = [replay.make_online_table(config.replay, spec)]
    if with_offline:
        tables.append(replay.make_online_table(config.replay, spec, name=replay.OFFLINE_TABLE))
    server = reverb.Server(tables, port=None)
    connection.send(server.port)
    connection.recv()
    server.stop()


def _sides(text: str) -> list:
    """"1,8@2" -> [(1, None), (8, 2)]: updates per call, and sampling workers (None: the config's)."""
    sides = []
    for part in text.split(","):
        k, _, workers = part.partition("@")
        sides.append((int(k), None if workers in ("", "auto") else int(workers)))
    return sides


def _label(k: int, workers) -> str:
    return f"k={k}" + ("" if workers is None else f"@{workers}")


def _sampling_alone(address: str, replay_config, layout, calls: int, repeats: int) -> float:
    """Batches/s of the node's tf.data pipeline pulled inside TensorFlow (no Python per batch)."""
    iterator = iter(replay.make_dataset(address, replay_config, layout))

    @tf.function
    def pull(count):
        items = tf.constant(0)
        for _ in tf.range(count):
            items += tf.shape(iterator.get_next().data["reward"])[0]
        return items

    pull(calls)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        pull(calls)
        seconds.append(time.perf_counter() - start)
    return calls / statistics.median(seconds)


def run_ceilings(args: argparse.Namespace) -> int:
    import multiprocessing

    import psutil

    run_root = tempfile.mkdtemp(prefix="relay-datapath-")
    sides_wanted = _sides(args.steps_per_call)
    config = bench_config(args.agent, args.env, f"{run_root}/fill")
    spec = environments.environment_spec(config.environment)
    context = multiprocessing.get_context("spawn")
    connection, child_end = context.Pipe()
    server_process = context.Process(target=_serve, args=(args.agent, args.env, bool(args.rae_ratio), child_end),
                                     daemon=True)
    server_process.start()
    server = argparse.Namespace(port=connection.recv(), process=psutil.Process(server_process.pid))
    address = f"localhost:{server.port}"
    fill_table(server, args.env, args.episodes, config.replay)
    if args.rae_ratio:
        fill_table(server, args.env, max(1, args.episodes // 2), config.replay, table=replay.OFFLINE_TABLE, seed=1)
    sizes = {name: info.current_size for name, info in reverb.Client(address).server_info().items()}
    learner = agents.Learner(config.learner, spec.observations.shape, spec.actions.shape[0])
    stop = threading.Event()
    sides, configs_of = {}, {}
    for k, workers in sides_wanted:
        label = _label(k, workers)
        base_config = bench_config(args.agent, args.env, f"{run_root}/{label}")
        configs_of[label] = dataclasses.replace(
            base_config, learner_steps_per_call=k,
            replay=dataclasses.replace(base_config.replay, sampling_workers=workers or base_config.replay.sampling_workers),
            rae=RaEConfig(runs=("(this benchmark's second table)",), ratio=args.rae_ratio) if args.rae_ratio else None)
        batches = replay_batches(configs_of[label], replay.layout_of(spec), address, learner, 0, stop)
        sides[label] = (_Drain(batches, k) if args.learner == "none" else
                        LearnerLoop(configs_of[label], CheapLearner(learner), initial_state(configs_of[label], learner),
                                    batches))
    labels = list(sides)
    updates_per_block = args.steps_per_block * max(k for k, _ in sides_wanted)
    for side in sides.values():  # compile, fill the pipelines
        while side.steps < updates_per_block // 2:
            side.step()
    rates, cores, server_cores = ({label: [] for label in labels} for _ in range(3))
    server_cpu = lambda: sum(server.process.cpu_times()[:2])  # noqa: E731
    for block in range(args.blocks):
        for label in (labels if block % 2 == 0 else list(reversed(labels))):
            side, first = sides[label], sides[label].steps
            wall, cpu, served = time.perf_counter(), time.process_time(), server_cpu()
            while side.steps - first < updates_per_block:
                side.step()
            if isinstance(side, LearnerLoop):
                jax.block_until_ready(side.state)
            wall, cpu, served = time.perf_counter() - wall, time.process_time() - cpu, server_cpu() - served
            rates[label].append((side.steps - first) / wall)
            cores[label].append(cpu / wall)  # this process: sampling client, conversion, transfer, loop
            server_cores[label].append(served / wall)
    sampling = {}
    if not args.rae_ratio:
        for (k, _), label in zip(sides_wanted, labels):
            replay_config = configs_of[label].replay
            sampling[label] = k * _sampling_alone(
                address, dataclasses.replace(replay_config, batch_size=k * replay_config.batch_size),
                replay.layout_of(spec), max(2, updates_per_block // k), max(3, args.blocks // 2))
    stop.set()
    for side in sides.values():
        if isinstance(side, LearnerLoop):
            side.settle()
            side.close()
        else:
            side.close()
    connection.send("stop")
    server_process.join(timeout=30)

    base = labels[0]
    cpu_name = results_io.cpu_name()
    result = {
        "benchmark": "datapath_ceiling", "learner": args.learner, "agent": args.agent, "task": args.env,
        "batch_size": config.replay.batch_size, "rae_ratio": args.rae_ratio, "table_sizes": sizes,
        "updates_per_block": updates_per_block, "blocks": args.blocks, "cpu": cpu_name, "cores": os.cpu_count(),
        "sides": {label: {
            "learner_steps_per_call": configs_of[label].learner_steps_per_call,
            "sampling_workers": configs_of[label].replay.sampling_workers,
            "updates_per_s_median": statistics.median(rates[label]), "updates_per_s": rates[label],
            "transitions_per_s_median": statistics.median(rates[label]) * config.replay.batch_size,
            "cores_used_median": statistics.median(cores[label]),
            "server_cores_used_median": statistics.median(server_cores[label]),
            "updates_per_s_per_core_median": statistics.median(
                r / (c + s) for r, c, s in zip(rates[label], cores[label], server_cores[label])),
            "over_first_median": statistics.median(r / b for r, b in zip(rates[label], rates[base])),
            "sampling_alone_updates_per_s_median": sampling.get(label)} for label in labels},
        "jax_backend": jax.default_backend(), "time_utc": results_io.timestamp(),
    }
    name = f"datapath_{args.learner}" + (f"_rae{args.rae_ratio:g}" if args.rae_ratio else "")
    path = results_io.write_json_exclusive(result, results_io.bench_output_path(name, args.out))
    what = "the pipeline drained, no learning" if args.learner == "none" else "the learner loop, a near-free update"
    print(f"{cpu_name} ({os.cpu_count()} cores); {what}; batch {config.replay.batch_size}"
          + (f", RaE share {args.rae_ratio:g}" if args.rae_ratio else "") + f"; tables {sizes}; "
          f"{args.blocks} blocks of {updates_per_block} updates per side (k=updates per call, @sampling workers)")
    for label in labels:
        r = result["sides"][label]
        print(f"  {label:8} {r['updates_per_s_median']:7.0f} updates/s ({r['transitions_per_s_median'] / 1e3:5.0f}k "
              f"transitions/s), {r['cores_used_median']:.2f} cores + {r['server_cores_used_median']:.2f} the "
              f"server's ({r['updates_per_s_per_core_median']:5.0f} updates/s per core); x{r['over_first_median']:.2f} "
              f"over {base}" + (f"; sampling alone {r['sampling_alone_updates_per_s_median']:.0f} updates/s"
                                if r["sampling_alone_updates_per_s_median"] else ""))
    print(f"wrote {path}")
    return 0
