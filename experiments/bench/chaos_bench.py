"""Random SIGKILLs through a whole run: node processes and supervisors of every node, on one
machine (local_mp) or on the namespace SLURM cluster (experiments/testbed; needs root).

Two runs with the same settings (debug preset, 2 actors, cartpole:swingup by default). In
the chaos run, after --warmup env steps, a random process of the run is SIGKILLed every
--kill_every_s on average (uniform in [0.5, 1.5] times it): a node's own process or its
supervisor (`launch.runtime.entry` without --attempt; what losing the node's host looks like
on one machine), of a node drawn from every node of the program. Kills stop after --kills,
or once the actors are past 90% of --max_env_steps (a kill after the stop request may cost
the final checkpoint). The restart budget is set above the number of kills: this measures
surviving, not the budget (tests/test_supervisor.py checks the budget). Then the baseline run,
undisturbed.

With --launch_type=slurm the run is a heterogeneous job on a SLURM cluster of four namespace
hosts (replay, counter, monitor and evaluator on one, the learner on one, the two actors on
two), followed by its launcher, and a third kind of victim is drawn: the node's host, every
process of the job there (the steps' slurmstepd, supervisors, nodes) but slurmd and the job
script's own (the job driver; a lost batch host is SLURM's to requeue). The job finds nodes
lost once the counter has heard nothing from them for --lost_after_s. Reported:
- whether the chaos run ended with exit 0 at max_env_steps, and its final checkpoint loads;
- wall time added per kill: (chaos run's wall time - the baseline's) / kills;
- env steps counted (the summary) against steps recorded on disk: every recorded step was
  counted first; the difference is what killed actors had counted but not yet written.
"""

import argparse
import collections
import contextlib
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import time
from typing import Optional

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
    parser.add_argument("--launch_type", default="local_mp", choices=["local_mp", "slurm"])
    parser.add_argument("--lost_after_s", type=float, default=20.0, help="slurm: silence after which nodes are lost")
    parser.add_argument("--skip_baseline", action="store_true", help="the chaos run only (no time added per kill)")
    parser.add_argument("--out", default=None)


def _env_steps(run_dir: str) -> float:
    return env_steps(counter_state(run_dir))


def _processes(run_dir: str, node: str) -> dict:
    """The node's processes now: {"node": its own process, "supervisor": its supervisor}, as found
    (in the run's current launch: a SLURM run may have gone on in a new one)."""
    found = {}
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if f"--node={node}" in cmdline and any(arg.startswith(f"--launch_dir={run_dir}/launches/") for arg in cmdline):
            found["node" if any(arg.startswith("--attempt=") for arg in cmdline) else "supervisor"] = process
    return found


def _recorded_steps(run_dir: str) -> int:
    """Steps on disk, every actor's streams (every recorded step but the LASTs)."""
    from replay import experience

    root = os.path.join(run_dir, "experience")
    return sum(int(np.sum(e["step_type"] != 2)) for stream in sorted(os.listdir(root))
               if os.path.isdir(os.path.join(root, stream))
               for e in experience.read_episodes(os.path.join(root, stream)))


class _SlurmHosts:
    """The namespace SLURM cluster the slurm runs go to, and a host's loss."""

    NAMES = ("h1", "h2", "h3", "h4")

    def __init__(self, workdir: str, lost_after_s: float):
        from experiments.testbed import netns_hosts, slurm_cluster

        reason = slurm_cluster.unavailable_reason()
        if reason:
            raise SystemExit(f"bench chaos --launch_type=slurm needs the namespace SLURM cluster: {reason}")
        self._stack = contextlib.ExitStack()
        self.hosts = self._stack.enter_context(netns_hosts.HostNamespaces(list(self.NAMES)))
        self.cluster = self._stack.enter_context(slurm_cluster.SlurmCluster(pathlib.Path(workdir), self.hosts))
        self.cluster.wait_ready(120)
        self.spec = os.path.join(workdir, "cluster.json")
        with open(self.spec, "w") as file:
            json.dump({"components": [{"groups": ["replay", "counter", "monitor", "evaluator"]}, {"groups": ["learner"]},
                                      {"groups": ["actor"], "nodes": 2}],
                       "slurm": {"lost_after_s": lost_after_s}}, file)

    def close(self) -> None:
        self._stack.close()

    def host_of(self, pid: int) -> Optional[str]:
        return next((name for name in self.NAMES if pid in self.hosts.namespace_pids(name)), None)

    def job_processes(self, host: str) -> list:
        """Every process of the job on `host` but slurmd and the job script's (its slurmstepd
        "[<job>.batch]", the driver and its sruns under it)."""
        keep = {self.cluster._procs[f"slurmd.{host}"].pid}
        processes = []
        for pid in self.hosts.namespace_pids(host):
            try:
                process = psutil.Process(pid)
                if ".batch]" in " ".join(process.cmdline()) or ".extern]" in " ".join(process.cmdline()):
                    keep |= {pid} | {child.pid for child in process.children(recursive=True)}
                processes.append(process)
            except psutil.NoSuchProcess:
                pass
        return [process for process in processes if process.pid not in keep]


def _command(run_dir: str, args, max_restarts: int, slurm: Optional[_SlurmHosts]) -> list:
    command = [sys.executable, "-m", "experiments.train", "--preset=debug", "--agent=mpo", f"--env={args.env}",
               "--num_actors=2", f"--run_dir={run_dir}", f"--max_env_steps={args.max_env_steps}",
               f"--launch_type={args.launch_type}", f"--set=experiment.max_restarts_per_node={max_restarts}"]
    return command + ([f"--cluster={slurm.spec}", f"--slurm_max_jobs={max_restarts}"] if slurm else [])


def _kill(run_dir: str, node: str, kind: str, slurm: Optional[_SlurmHosts]) -> Optional[str]:
    """SIGKILLs `node`'s process, its supervisor, or (kind "host") every process of the job on its
    host; what was killed, or None when there was nothing to kill (it is being started again)."""
    found = _processes(run_dir, node)
    if kind != "host":
        victims = [found[kind]] if kind in found else []
    else:
        host = next((slurm.host_of(process.pid) for process in found.values()), None)
        victims = slurm.job_processes(host) if host else []
    killed = 0
    for process in victims:
        try:
            process.send_signal(signal.SIGKILL)
            killed += 1
        except psutil.NoSuchProcess:
            pass
    if not killed:
        return None
    return f"{node}'s {kind}" if kind != "host" else f"{node}'s host {host} ({killed} processes)"


def run_once(run_dir: str, args, chaos: bool, slurm: Optional[_SlurmHosts] = None) -> dict:
    rng = random.Random(args.seed)
    kinds = ("node", "supervisor") + (("host",) if slurm else ())
    started = time.time()
    with open(os.path.join(os.path.dirname(run_dir), os.path.basename(run_dir) + ".out"), "w") as output:
        launcher = subprocess.Popen(_command(run_dir, args, args.kills + 1, slurm), cwd=ROOT, stdout=output,
                                    stderr=subprocess.STDOUT, env=slurm.cluster.env if slurm else None)
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
            node, kind = rng.choice(NODES), rng.choice(kinds)
            killed = _kill(run_dir, node, kind, slurm)
            if killed is None:  # it is being started again: this kill is drawn once more later
                continue
            kills.append({"time_s": round(time.time() - started, 1), "node": node, "process": kind,
                          "killed": killed, "env_steps": steps})
            print(f"kill {len(kills)}: {killed} at {time.time() - started:.0f} s, {steps:,.0f} env steps", flush=True)
        launcher.wait(timeout=6 * 3600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    wall_s = time.time() - started
    with open(os.path.join(run_dir, "summary.json")) as file:
        summary = json.load(file)
    from launch.rundir import checkpoints
    from launch.rundir.jobs import run_jobs

    checkpoint, damaged = checkpoints.load_latest(run_dir)
    recorded = _recorded_steps(run_dir)
    return {"returncode": launcher.returncode, "wall_s": round(wall_s, 1), "kills": kills,
            "reached_max_env_steps": summary["reached_max_env_steps"], "env_steps_counted": summary["env_steps"],
            "env_steps_recorded": recorded, "counted_not_recorded": summary["env_steps"] - recorded,
            "learner_steps": summary["learner_steps"], "restarts": len(summary["restarts"]),
            "final_checkpoint_step": None if checkpoint is None else checkpoint.step,
            "final_checkpoint_loads": checkpoint is not None and not damaged
            and checkpoint.step == summary["learner_steps"], "stop_reason": summary["stop_reason"],
            "slurm_jobs": [record for record in run_jobs(run_dir) if record["event"] != "submitted"] if slurm else None}


def run(args: argparse.Namespace) -> int:
    out = results_io.bench_output_path("chaos", args.out)
    base = os.path.join(ROOT, "runs", "bench", f"chaos-{results_io.timestamp()}")
    os.makedirs(base)
    # The SLURM cluster's state (its spool, its sockets' paths) under a short path of its own.
    slurm = _SlurmHosts(tempfile.mkdtemp(prefix="relay-chaos-"), args.lost_after_s) \
        if args.launch_type == "slurm" else None
    try:
        chaos = run_once(os.path.join(base, "chaos"), args, chaos=True, slurm=slurm)
        baseline = None if args.skip_baseline else run_once(os.path.join(base, "baseline"), args, chaos=False,
                                                            slurm=slurm)
    finally:
        if slurm is not None:
            slurm.close()
    cpu = results_io.cpu_name()
    kills = len(chaos["kills"])
    added = None if baseline is None or not kills else round((chaos["wall_s"] - baseline["wall_s"]) / kills, 1)
    data = {"benchmark": "chaos", "cpu": cpu, "cores": os.cpu_count(), "settings": vars(args), "runs_under": base,
            "chaos": chaos, "baseline": baseline, "wall_s_added_per_kill": added,
            "survived": chaos["returncode"] == 0 and chaos["reached_max_env_steps"] and chaos["final_checkpoint_loads"]}
    path = results_io.write_json_exclusive(data, out)
    print(f"{cpu} ({os.cpu_count()} cores)")
    by_kind = collections.Counter(f"{kill['node'].split('/')[0]} {kill['process']}" for kill in chaos["kills"])
    print(f"launch type: {args.launch_type}")
    print(f"{kills} kills over {chaos['kills'][-1]['time_s'] - chaos['kills'][0]['time_s'] if kills else 0:.0f} s: "
          + ", ".join(f"{name} {count}" for name, count in sorted(by_kind.items())))
    print(f"chaos run: exit {chaos['returncode']}, reached max_env_steps {chaos['reached_max_env_steps']}, "
          f"final checkpoint loads {chaos['final_checkpoint_loads']}, {chaos['wall_s']:.0f} s; "
          f"env steps counted {chaos['env_steps_counted']:,}, recorded {chaos['env_steps_recorded']:,}")
    if baseline is not None:
        print(f"baseline: {baseline['wall_s']:.0f} s; wall time added per kill: {added} s")
    print(f"wrote {path}")
    return 0 if data["survived"] else 1
