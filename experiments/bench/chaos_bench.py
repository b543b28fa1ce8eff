"""Random SIGKILLs through a whole local_mp run: node processes and supervisors of every node.

Two runs with the same settings (debug preset, 2 actors, cartpole:swingup by default). In
the chaos run, after --warmup env steps, a random process of the run is SIGKILLed every
--kill_every_s on average (uniform in [0.5, 1.5] times it): a node's own process or its
supervisor (`launch.runtime.entry` without --attempt; what losing the node's host looks like
on one machine), of a node drawn from every node of the program. Kills stop after --kills,
or once the actors are past 90% of --max_env_steps (a kill after the stop request may cost
the final checkpoint). The restart budget is set above the number of kills: this measures
surviving, not the budget (tests/test_supervisor.py checks the budget). Then the baseline run,
undisturbed. Reported:
- whether the chaos run ended with exit 0 at max_env_steps, and its final checkpoint loads;
- wall time added per kill: (chaos run's wall time - the baseline's) / kills;
- env steps counted (the summary) against steps recorded on disk: every recorded step was
  counted first; the difference is what killed actors had counted but not yet written.
"""

import argparse
import collections
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time

import numpy as np
import psutil

from experiments import results_io
from experiments.bench.faults_bench import counter_state, env_steps

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODES = ("actor/0", "actor/1", "learner/0", "replay/0", "counter/0", "monitor/0", "evaluator/0")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="cartpole:swingup")
    parser.add_argument("--max_env_steps", type=int, default=300_000)
    parser.add_argument("--warmup", type=int, default=3000, help="env steps before the first kill")
    parser.add_argument("--kills", type=int, default=24)
    parser.add_argument("--kill_every_s", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=0, help="draws the victims and the moments")
    parser.add_argument("--skip_baseline", action="store_true", help="the chaos run only (no time added per kill)")
    parser.add_argument("--out", default=None)


def _env_steps(run_dir: str) -> float:
    return env_steps(counter_state(run_dir))


def _processes(run_dir: str, node: str) -> dict:
    """The node's processes now: {"node": its own process, "supervisor": its supervisor}, as found."""
    launch_dir = os.path.join(run_dir, "launches", "0")
    found = {}
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if f"--launch_dir={launch_dir}" in cmdline and f"--node={node}" in cmdline:
            found["node" if any(arg.startswith("--attempt=") for arg in cmdline) else "supervisor"] = process
    return found


def _recorded_steps(run_dir: str) -> int:
    """Steps on disk, every actor's streams (every recorded step but the LASTs)."""
    from replay import experience

    root = os.path.join(run_dir, "experience")
    return sum(int(np.sum(e["step_type"] != 2)) for stream in sorted(os.listdir(root))
               if os.path.isdir(os.path.join(root, stream))
               for e in experience.read_episodes(os.path.join(root, stream)))


def _command(run_dir: str, args, max_restarts: int) -> list:
    return [sys.executable, "-m", "experiments.train", "--preset=debug", "--agent=mpo", f"--env={args.env}",
            "--num_actors=2", f"--run_dir={run_dir}", f"--max_env_steps={args.max_env_steps}",
            "--launch_type=local_mp", f"--set=experiment.max_restarts_per_node={max_restarts}"]


def run_once(run_dir: str, args, chaos: bool) -> dict:
    rng = random.Random(args.seed)
    started = time.time()
    with open(os.path.join(os.path.dirname(run_dir), os.path.basename(run_dir) + ".out"), "w") as output:
        launcher = subprocess.Popen(_command(run_dir, args, args.kills + 1), cwd=ROOT, stdout=output,
                                    stderr=subprocess.STDOUT)
    kills = []
    try:
        while chaos and launcher.poll() is None and len(kills) < args.kills:
            if _env_steps(run_dir) < args.warmup:
                time.sleep(0.5)
                continue
            deadline = time.time() + args.kill_every_s * rng.uniform(0.5, 1.5)
            while time.time() < deadline and launcher.poll() is None:
                time.sleep(0.2)
            steps = _env_steps(run_dir)
            if launcher.poll() is not None or steps >= 0.9 * args.max_env_steps:
                break
            node, kind = rng.choice(NODES), rng.choice(("node", "supervisor"))
            process = _processes(run_dir, node).get(kind)
            if process is None:  # it is being started again: this kill is drawn once more later
                continue
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                continue
            kills.append({"time_s": round(time.time() - started, 1), "node": node, "process": kind,
                          "env_steps": steps})
            print(f"kill {len(kills)}: {node}'s {kind} at {time.time() - started:.0f} s, {steps:,.0f} env steps",
                  flush=True)
        launcher.wait(timeout=6 * 3600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    wall_s = time.time() - started
    with open(os.path.join(run_dir, "summary.json")) as file:
        summary = json.load(file)
    from launch.rundir import checkpoints

    checkpoint, damaged = checkpoints.load_latest(run_dir)
    recorded = _recorded_steps(run_dir)
    return {"returncode": launcher.returncode, "wall_s": round(wall_s, 1), "kills": kills,
            "reached_max_env_steps": summary["reached_max_env_steps"], "env_steps_counted": summary["env_steps"],
            "env_steps_recorded": recorded, "counted_not_recorded": summary["env_steps"] - recorded,
            "learner_steps": summary["learner_steps"], "restarts": len(summary["restarts"]),
            "final_checkpoint_step": None if checkpoint is None else checkpoint.step,
            "final_checkpoint_loads": checkpoint is not None and not damaged
            and checkpoint.step == summary["learner_steps"], "stop_reason": summary["stop_reason"]}


def run(args: argparse.Namespace) -> int:
    out = results_io.bench_output_path("chaos", args.out)
    base = os.path.join(ROOT, "runs", "bench", f"chaos-{results_io.timestamp()}")
    os.makedirs(base)
    chaos = run_once(os.path.join(base, "chaos"), args, chaos=True)
    baseline = None if args.skip_baseline else run_once(os.path.join(base, "baseline"), args, chaos=False)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    kills = len(chaos["kills"])
    added = None if baseline is None or not kills else round((chaos["wall_s"] - baseline["wall_s"]) / kills, 1)
    data = {"benchmark": "chaos", "cpu": cpu, "cores": os.cpu_count(), "settings": vars(args), "runs_under": base,
            "chaos": chaos, "baseline": baseline, "wall_s_added_per_kill": added,
            "survived": chaos["returncode"] == 0 and chaos["reached_max_env_steps"] and chaos["final_checkpoint_loads"]}
    path = results_io.write_json_exclusive(data, out)
    print(f"{cpu} ({os.cpu_count()} cores)")
    by_kind = collections.Counter(f"{kill['node'].split('/')[0]} {kill['process']}" for kill in chaos["kills"])
    print(f"{kills} kills over {chaos['kills'][-1]['time_s'] - chaos['kills'][0]['time_s'] if kills else 0:.0f} s: "
          + ", ".join(f"{name} {count}" for name, count in sorted(by_kind.items())))
    print(f"chaos run: exit {chaos['returncode']}, reached max_env_steps {chaos['reached_max_env_steps']}, "
          f"final checkpoint loads {chaos['final_checkpoint_loads']}, {chaos['wall_s']:.0f} s; "
          f"env steps counted {chaos['env_steps_counted']:,}, recorded {chaos['env_steps_recorded']:,}")
    if baseline is not None:
        print(f"baseline: {baseline['wall_s']:.0f} s; wall time added per kill: {added} s")
    print(f"wrote {path}")
    return 0 if data["survived"] else 1
