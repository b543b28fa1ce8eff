"""One node's process SIGKILLed mid-run (local_mp): how long until it works again, and what is lost.

For each node in --nodes, a fresh run (debug preset, 2 actors, cartpole:swingup by
default) whose node is killed once the actors have taken --kill_at env steps. From the
counter's saved state (every 0.5 s) and the node's log:
- recovery_s: from the kill until the node works again. actor: its new process has
  counted steps; learner: its new process has reported a step; replay: the refilled
  server has taken 200 more env steps' items (the actors write again); counter: the
  restarted counter has saved a state with more env steps than at the kill.
- lost: actor: steps the dead process counted that are not on disk (not yet recorded);
  learner: learner steps since its newest checkpoint; replay: the table's size at the
  kill (the monitor's last figure, up to 1 s old) less the items the refill brought back
  (negative: more was recorded in between); counter: the actors' own final totals less
  the counter's (the nodes report their totals again).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil

from experiments import results_io

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", default="actor/1,learner/0,replay/0,counter/0")
    parser.add_argument("--env", default="cartpole:swingup")
    parser.add_argument("--kill_at", type=int, default=2000, help="env steps before the kill")
    parser.add_argument("--max_env_steps", type=int, default=12000)
    parser.add_argument("--out", default=None)


def counter_state(run_dir: str) -> dict:
    """The counter's state as it last saved it (every 0.5 s); {} while there is none."""
    try:
        with open(os.path.join(run_dir, "launches", "0", "counter_state.json")) as file:
            return json.load(file)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def env_steps(state: dict) -> float:
    """The env steps in a counter state: every actor process's, each once."""
    return sum(sender.get("actor_steps", 0) for sender in state.get("by_sender", {}).values())


def _wait(condition, timeout_s: float = 300.0, interval_s: float = 0.05, ended=lambda: False):
    """condition()'s first true value; an error once `ended()` (the run is over) or after `timeout_s`."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        over = ended()
        result = condition()
        if result:
            return result
        if over:
            raise SystemExit("error: the run ended before the killed node was back at work, so there is no "
                             "recovery to measure; give it more steps after the kill (--max_env_steps).")
        time.sleep(interval_s)
    raise TimeoutError("the condition did not hold in time")


def _node_process(run_dir: str, node: str, attempt: int = 0):
    launch_dir = os.path.join(run_dir, "launches", "0")
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if f"--launch_dir={launch_dir}" in cmdline and f"--node={node}" in cmdline and f"--attempt={attempt}" in cmdline:
            return process
    return None


def _replay_size(run_dir: str) -> int:
    """The replay table's size in the monitor's last complete progress row."""
    with open(os.path.join(run_dir, "metrics", "progress.csv")) as file:
        lines = [line for line in file if line.endswith("\n")]
    header, last = lines[0].rstrip("\n").split(","), lines[-1].rstrip("\n").split(",")
    return int(float(last[header.index("replay_size")]))


def _recorded_steps(run_dir: str, stream: str) -> int:
    from replay import experience

    return sum(int(np.sum(e["step_type"] != 2)) for e in experience.read_episodes(os.path.join(run_dir, "experience", stream)))


def _log(run_dir: str, node: str) -> str:
    with open(os.path.join(run_dir, "logs", *node.split("/"))) as file:
        return file.read()


def measure(node: str, run_dir: str, args) -> dict:
    command = [sys.executable, "-m", "experiments.train", "--preset=debug", "--agent=mpo", f"--env={args.env}",
               "--num_actors=2", f"--run_dir={run_dir}", f"--max_env_steps={args.max_env_steps}",
               "--launch_type=local_mp", "--set=experiment.checkpoint_every_learner_steps=100"]
    launcher = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: env_steps(counter_state(run_dir)) >= args.kill_at)
        at_kill = counter_state(run_dir)
        senders_before = set(at_kill["by_sender"])
        _node_process(run_dir, node).send_signal(signal.SIGKILL)
        killed = time.time()
        run_over = lambda: launcher.poll() is not None  # noqa: E731
        result = {"node": node, "env_steps_at_kill": env_steps(at_kill), "replay_size_at_kill": _replay_size(run_dir)}
        if node.startswith("actor"):
            actor = "actor_" + node.split("/")[1]
            _wait(lambda: [totals for sender, totals in counter_state(run_dir)["by_sender"].items()
                                 if sender.startswith(actor + "-") and sender not in senders_before
                                 and totals.get("actor_steps", 0) > 0], ended=run_over)
            result["recovery_s"] = time.time() - killed
        elif node.startswith("learner"):
            before = at_kill["values"].get("learner_steps", 0)
            _wait(lambda: counter_state(run_dir)["values"].get("learner_steps", 0) != before, ended=run_over)
            result["recovery_s"] = time.time() - killed
        elif node.startswith("replay"):
            _wait(lambda: "replay: restarted and refilled" in _log(run_dir, node), ended=run_over)
            refilled_at = env_steps(counter_state(run_dir))
            _wait(lambda: env_steps(counter_state(run_dir)) >= refilled_at + 200, ended=run_over)
            result["recovery_s"] = time.time() - killed
        else:
            _wait(lambda: _node_process(run_dir, node, 1) is not None, ended=run_over)
            _wait(lambda: env_steps(counter_state(run_dir)) > result["env_steps_at_kill"]
                  and _node_process(run_dir, node, 1) is not None, ended=run_over)
            result["recovery_s"] = time.time() - killed
        launcher.wait(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    with open(os.path.join(run_dir, "summary.json")) as file:
        summary = json.load(file)
    result.update(returncode=launcher.returncode, reached_max_env_steps=summary["reached_max_env_steps"],
                  restarts=summary["restarts"])
    final = counter_state(run_dir)
    if node.startswith("actor"):
        actor = "actor_" + node.split("/")[1]
        with open(os.path.join(run_dir, f"{actor}.json")) as file:
            restarted_steps = json.load(file)["actor_steps"]
        dead = [totals["actor_steps"] for sender, totals in final["by_sender"].items()
                if sender.startswith(actor + "-") and totals["actor_steps"] != restarted_steps]
        result["counted_not_recorded_env_steps"] = dead[0] - (_recorded_steps(run_dir, actor) - restarted_steps)
    elif node.startswith("learner"):
        log = _log(run_dir, node)
        restored = int(log.split("learner: restarted from checkpoint ")[1].split("(learner step ")[1].split(")")[0])
        result["lost_learner_steps"] = at_kill["values"].get("learner_steps", 0) - restored
    elif node.startswith("replay"):
        log = _log(run_dir, node)
        refilled = int(log.split("replay: restarted and refilled with ")[1].split(" recorded")[0].replace(",", ""))
        result["refilled_items"] = refilled
        result["lost_items"] = result["replay_size_at_kill"] - refilled  # about: the size is from <= 1 s before
    else:
        actors = []
        for actor_id in range(2):
            with open(os.path.join(run_dir, f"actor_{actor_id}.json")) as file:
                actors.append(json.load(file)["actor_steps"])
        result["final_env_steps"] = summary["env_steps"]
        result["lost_env_steps"] = sum(actors) - summary["env_steps"]
    return result


def run(args: argparse.Namespace) -> int:
    out = results_io.bench_output_path("faults", args.out)
    base = os.path.join(ROOT, "runs", "bench", f"faults-{results_io.timestamp()}")
    results = []
    for node in args.nodes.split(","):
        result = measure(node, os.path.join(base, node.replace("/", "_")), args)
        results.append(result)
        print(json.dumps(result), flush=True)
    cpu = results_io.cpu_name()
    data = {"benchmark": "faults", "cpu": cpu, "cores": os.cpu_count(), "env": args.env, "kill_at": args.kill_at,
            "max_env_steps": args.max_env_steps, "results": results}
    path = results_io.write_json_exclusive(data, out)
    print(f"{cpu} ({os.cpu_count()} cores)")
    for result in results:
        lost = {k: v for k, v in result.items() if "lost" in k or "recorded" in k or k == "refilled_items"}
        print(f"{result['node']:10s} recovery {result['recovery_s']:5.1f} s  {lost}  reached max: "
              f"{result['reached_max_env_steps']}")
    print(f"wrote {path}")
    return 0
