"""The network path's cost when a program spans hosts: network namespaces on this machine.

Two measurements, each against the same work on one host:
  actors    total env steps/s of the acting program (replay, counter, monitor and policy
            server on h1) with its actors on 1 host (h2) and on 2 hosts (h2, h3), started
            with `--launch_type=hosts`, and the same program with local_mp (loopback);
  learner   learner SGD steps/s fed from a Reverb server on h1, the learner on h2 (over the
            bridge) against the learner on h1 (the server's own host), alternating rounds.

The "hosts" share this machine's cores: these figures measure what the network path (veth,
bridge, gRPC over TCP instead of loopback) costs, not scaling across machines. Needs root
(network namespaces).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from experiments import results_io

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="walker:walk", help="task, 'domain:task'")
    parser.add_argument("--num_actors", type=int, default=2)
    parser.add_argument("--max_env_steps", type=int, default=60_000, help="env steps per acting run")
    parser.add_argument("--agent", default="mpo", help="the learner fed from Reverb")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per placement, in alternating order")
    parser.add_argument("--steps", type=int, default=300, help="SGD steps per learner measurement")
    parser.add_argument("--parts", default="actors,learner", help="which measurements: actors, learner")
    parser.add_argument("--out", default=None, help="JSON path (default runs/bench/multinode-<time>.json)")
    # Internal: the processes the learner measurement starts inside namespaces.
    parser.add_argument("--role", default=None, choices=["server", "learner"], help=argparse.SUPPRESS)
    parser.add_argument("--address", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port_file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--episodes", type=int, default=10, help=argparse.SUPPRESS)


def _spec(hosts, placement):
    from launch.runtime import cluster

    host = lambda name: {"name": hosts.netns_name(name), "address": hosts.hosts[name]}  # noqa: E731
    return cluster.from_json({
        "components": [{"groups": list(groups), "hosts": [host(name) for name in names]} for groups, names in placement],
        "command_template": "nsenter --net=/run/netns/{host} --"})


def measure_actors(args, hosts, bench_dir) -> dict:
    from experiments.bench import acting

    central = (("replay", "counter", "monitor", "learner"), ["h1"])
    placements = {
        "local_mp": None,
        "actors_on_1_host": _spec(hosts, [central, (("actor",), ["h2"])]),
        "actors_on_2_hosts": _spec(hosts, [central, (("actor",), ["h2", "h3"])]),
    }
    runs = {name: [] for name in placements}
    for round_index in range(args.rounds):
        order = list(placements) if round_index % 2 == 0 else list(reversed(placements))
        for name in order:
            run = acting.run_acting_program(args.env, args.num_actors, args.max_env_steps,
                                            os.path.join(bench_dir, f"{name}-{round_index}"), cluster_spec=placements[name])
            runs[name].append(run)
            print(f"  round {round_index}: {name:18s} {run['total_env_steps_per_s']:8.0f} env steps/s", flush=True)
    rates = {name: [run["total_env_steps_per_s"] for run in values] for name, values in runs.items()}
    # Ratios within each round (the rounds' conditions differ more than placements within one).
    ratios = {name: statistics.median(rate / base for rate, base in zip(rates[name], rates["local_mp"])) for name in rates}
    return {"runs": runs, "env_steps_per_s": rates,
            "median_env_steps_per_s": {name: statistics.median(values) for name, values in rates.items()},
            "over_local_mp_median": ratios}


def _in_namespace(hosts, name, argv):
    return hosts.popen(name, argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"},
                       stdout=subprocess.PIPE, text=True)


def measure_learner(args, hosts, bench_dir) -> dict:
    me = [sys.executable, "-m", "experiments.bench", "multinode", f"--env={args.env}", f"--agent={args.agent}"]
    port_file = os.path.join(bench_dir, "server_port")
    server = _in_namespace(hosts, "h1", me + ["--role=server", f"--port_file={port_file}", f"--episodes={args.episodes}"])
    deadline = time.time() + 300
    while not os.path.exists(port_file):
        if server.poll() is not None or time.time() > deadline:
            raise SystemExit("the Reverb server did not start")
        time.sleep(0.2)
    with open(port_file) as file:
        address = f"{hosts.hosts['h1']}:{file.read().strip()}"
    rates = {"learner_on_the_servers_host": [], "learner_on_another_host": []}
    try:
        for round_index in range(args.rounds):
            order = list(rates) if round_index % 2 == 0 else list(reversed(rates))
            for placement in order:
                host = "h1" if placement == "learner_on_the_servers_host" else "h2"
                learner = _in_namespace(hosts, host, me + ["--role=learner", f"--address={address}", f"--steps={args.steps}"])
                output, _ = learner.communicate(timeout=900)
                rates[placement].append(json.loads(output.strip().splitlines()[-1])["steps_per_s"])
                print(f"  round {round_index}: {placement:28s} {rates[placement][-1]:7.1f} SGD steps/s", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    ratios = [other / own for other, own in zip(rates["learner_on_another_host"], rates["learner_on_the_servers_host"])]
    return {"server": address, "steps_per_measurement": args.steps, "steps_per_s": rates,
            "median_steps_per_s": {name: statistics.median(values) for name, values in rates.items()},
            "another_host_over_own_host_median": statistics.median(ratios)}


def serve(args) -> int:
    """Role `server`: a Reverb server with the program's online table, filled by a random policy."""
    import reverb

    import environments
    import replay
    from experiments.bench.datapath_bench import bench_config, fill_table

    config = bench_config(args.agent, args.env, os.path.dirname(args.port_file)).replay  # as the learner role's
    # Reverb's default checkpointer would make a directory under /tmp; this one stays in the bench's.
    checkpointer = reverb.checkpointers.DefaultCheckpointer(os.path.join(os.path.dirname(args.port_file), "replay_checkpoint"))
    server = reverb.Server([replay.make_online_table(config, environments.environment_spec(
        environments.EnvironmentConfig(args.env)))], port=None, checkpointer=checkpointer)
    fill_table(server, args.env, args.episodes, config)
    with open(args.port_file + ".tmp", "w") as file:
        file.write(str(server.port))
    os.replace(args.port_file + ".tmp", args.port_file)
    server.wait()
    return 0


def learn(args) -> int:
    """Role `learner`: the learner node's loop on batches from the server at --address; prints its SGD steps/s."""
    import tempfile
    import threading

    import agents
    import environments
    import replay
    from experiments.bench.datapath_bench import bench_config, time_steps
    from launch.loops.learner import LearnerLoop, initial_state, replay_batches

    config = bench_config(args.agent, args.env, tempfile.mkdtemp(prefix="relay-multinode-learner-"))
    spec = environments.environment_spec(config.environment)
    learner = agents.Learner(config.learner, spec.observations.shape, spec.actions.shape[0])
    stop = threading.Event()
    batches = replay_batches(config, replay.layout_of(spec), args.address, learner, 0, stop)
    loop = LearnerLoop(config, learner, initial_state(config, learner), batches)
    time_steps(loop, 20)  # compile, fill the pipeline
    seconds = time_steps(loop, args.steps)
    stop.set()
    loop.settle()
    loop.close()
    print(json.dumps({"steps_per_s": args.steps / seconds}))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.role == "server":
        return serve(args)
    if args.role == "learner":
        return learn(args)
    from experiments.testbed import netns_hosts

    reason = netns_hosts.unavailable_reason()
    if reason:
        raise SystemExit(f"bench multinode needs network namespaces: {reason}")
    name = f"multinode-{args.env.replace(':', '_')}"
    bench_dir = str(results_io.DEFAULT_BENCH_DIR / f"{name}-{results_io.timestamp()}")
    os.makedirs(bench_dir)
    parts = [part for part in args.parts.split(",") if part]
    result = {"benchmark": "multinode", "task": args.env, "num_actors": args.num_actors, "cpu_count": os.cpu_count(),
              "note": "namespaces on one machine share its cores: the network path's overhead, not scaling"}
    with netns_hosts.HostNamespaces(["h1", "h2", "h3"]) as hosts:
        if "actors" in parts:
            print(f"acting program, {args.num_actors} actors, {args.max_env_steps} env steps each run:", flush=True)
            result["actors"] = measure_actors(args, hosts, bench_dir)
        if "learner" in parts:
            print(f"{args.agent} learner fed from a Reverb server on h1, {args.steps} SGD steps a measurement:", flush=True)
            result["learner"] = measure_learner(args, hosts, bench_dir)
    result["machine"] = {"python": platform.python_version(), "processor": platform.processor(),
                         "cpu_model": results_io.cpu_name(), "node": platform.node()}
    result["time_utc"] = results_io.timestamp()
    path = results_io.write_json_exclusive(result, results_io.bench_output_path(name, args.out))
    if "actors" in result:
        ratios = result["actors"]["over_local_mp_median"]
        print("env steps/s over local_mp: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    if "learner" in result:
        print(f"learner on another host / on the server's host: {result['learner']['another_host_over_own_host_median']:.3f} (median)")
    print(f"wrote {path}")
    return 0
