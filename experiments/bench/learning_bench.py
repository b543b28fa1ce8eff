"""Learning benchmark: each agent trained on a task for a step budget, curves to CSV + PNG.

    python -m experiments.bench learning --agents=mpo,dmpo,mog --env=cartpole:swingup \\
        --max_env_steps=100000 --seeds=0 --out_dir=experiments/results/learning-cartpole_swingup

Each (agent, seed) is a full `python -m experiments.train` run, one after another (its
run directory goes under runs/bench/). The out directory gets curves.csv (every
evaluation of every run), learning_curves.png and summary.json; it must be new.

    python -m experiments.bench learning --merge=DIR,DIR --out_dir=NEW

combines the outputs of earlier invocations (other agents, other seeds, other
machines) into one curves.csv, figure and summary.json, and copies their logs.
"""

import argparse
import csv
import json
import pathlib
import shutil
import statistics
import subprocess
import sys

from experiments import published, results_io
from launch.rundir import plots

CSV_FIELDS = ("agent", "seed", "env_steps", "learner_step", "mean_return", "std_return")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agents", default="mpo,dmpo,mog", help="comma list of mpo, dmpo, mog")
    parser.add_argument("--env", default="cartpole:swingup", help="task, 'domain:task'")
    parser.add_argument("--max_env_steps", type=int, default=100_000)
    parser.add_argument("--seeds", default="0", help="comma list of seeds")
    parser.add_argument("--num_actors", type=int, default=2)
    parser.add_argument("--eval_every_learner_steps", type=int, default=500)
    parser.add_argument("--preset", default="default", help="train's --preset for every run (default, small, acme, debug)")
    parser.add_argument("--set", action="append", default=[], help="config override for every run, as train's --set")
    parser.add_argument("--out_dir", default=None, help="new directory for the results (default runs/bench/learning-<task>-<time>)")
    parser.add_argument("--random_episodes", type=int, default=10,
                        help="episodes of a uniformly random policy on the runs' environment, measured first (0: none)")
    parser.add_argument("--merge", default=None,
                        help="comma list of earlier output directories to combine instead of training")


def _curve(run_dir: str) -> list:
    from launch.rundir import summary

    return summary.evaluations(run_dir)


def run(args: argparse.Namespace) -> int:
    if args.merge:
        return _merge(args)
    agents = [a for a in args.agents.split(",") if a]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    out_dir, runs_root = results_io.new_results_dir("learning", args.env, args.out_dir)

    random_policy = _random_policy(args, agents[0]) if args.random_episodes > 0 else None
    rows, summaries = [], []
    for agent in agents:
        for seed in seeds:
            run_dir = runs_root / f"{agent}-s{seed}"
            command = [sys.executable, "-m", "experiments.train", f"--agent={agent}", f"--env={args.env}",
                       f"--num_actors={args.num_actors}", f"--max_env_steps={args.max_env_steps}", f"--seed={seed}",
                       f"--run_dir={run_dir}", f"--preset={args.preset}",
                       f"--set=experiment.eval_every_learner_steps={args.eval_every_learner_steps}"]
            command += [f"--set={assignment}" for assignment in args.set]
            print("$", " ".join(command[1:]), flush=True)
            with open(out_dir / f"train-{agent}-s{seed}.log", "w") as log:
                code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
            if code != 0:
                raise SystemExit(f"error: the {agent} seed {seed} run exited with {code}; see {log.name}.")
            curve = _curve(str(run_dir))
            rows += [{"agent": agent, "seed": seed, **{k: row[k] for k in CSV_FIELDS[2:]}} for row in curve]
            with open(run_dir / "summary.json") as file:
                run_summary = json.load(file)
            summaries.append({"agent": agent, "seed": seed, "run_dir": str(run_dir), **run_summary})
            print(f"  {agent} seed {seed}: final eval {run_summary['final_eval_return']:.1f} at "
                  f"{int(curve[-1]['env_steps']) if curve else 0} env steps, best {run_summary['best_eval_return']:.1f}, "
                  f"{run_summary['wall_time_s']:.0f} s", flush=True)
    command = " ".join(["python -m experiments.bench learning"] + sys.argv[2:])
    setting = f"{args.num_actors} actors" + ("" if args.preset == "default" else f", preset {args.preset}")
    provenance = {"command": command}
    if random_policy is not None:
        provenance["random_policy"] = random_policy
    _write_results(out_dir, rows, summaries, args.env, args.max_env_steps, setting, provenance)
    return 0


def _random_policy(args: argparse.Namespace, agent: str) -> dict:
    """A uniformly random policy's returns on the runs' environment (action repeat and episode length
    as the runs'; rendering is left out: it changes what the policy sees, not the returns)."""
    import dataclasses

    from experiments import configs, rollout

    config = configs.make_experiment_config(agent=agent, task=args.env, run_dir="unused", preset=args.preset,
                                            overrides=args.set)
    environment = dataclasses.replace(config.environment, pixels=None, seed=10_000)
    returns, _, _ = rollout.random_rollout(environment, args.random_episodes, seed=0)
    result = {"episodes": len(returns), "mean_return": statistics.mean(returns),
              "std_return": statistics.pstdev(returns), "episode_returns": returns}
    print(f"random policy: {result['mean_return']:.1f} ± {result['std_return']:.1f} over {len(returns)} episodes",
          flush=True)
    return result


def _merge(args: argparse.Namespace) -> int:
    sources = [pathlib.Path(d) for d in args.merge.split(",") if d]
    parts = []
    for source in sources:
        missing = [name for name in ("curves.csv", "summary.json") if not (source / name).is_file()]
        if missing:
            raise SystemExit(f"error: --merge {source}: no {' or '.join(missing)}; pass directories that "
                             f"`python -m experiments.bench learning` wrote.")
        with open(source / "summary.json") as file:
            parts.append(json.load(file))
    tasks = {(part["task"], part["max_env_steps"]) for part in parts}
    if len(tasks) != 1:
        raise SystemExit(f"error: --merge needs one task and step budget; these have {sorted(tasks)}.")
    task, max_env_steps = tasks.pop()
    keys = [(run["agent"], run["seed"]) for part in parts for run in part["runs"]]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise SystemExit(f"error: --merge: agent and seed {repeated} appear in more than one directory; keep one.")
    out_dir, _ = results_io.new_results_dir("learning", task, args.out_dir)
    rows = []
    for source in sources:
        with open(source / "curves.csv") as file:
            for row in csv.DictReader(file):
                rows.append({k: (row[k] if k == "agent" else int(row[k]) if k in ("seed", "env_steps", "learner_step")
                                 else float(row[k])) for k in CSV_FIELDS})
        for log in sorted(source.glob("train-*.log")):
            shutil.copy2(log, out_dir / log.name)
    summaries = [run for part in parts for run in part["runs"]]
    _write_results(out_dir, rows, summaries, task, max_env_steps, "merged",
                   {"merged_from": [{"dir": str(source), "command": part.get("command")} for source, part in zip(sources, parts)]})
    return 0


def _write_results(out_dir: pathlib.Path, rows: list, summaries: list, task: str, max_env_steps: int,
                   setting: str, provenance: dict) -> None:
    agents = list(dict.fromkeys(run["agent"] for run in summaries))
    seeds = sorted({run["seed"] for run in summaries})
    with open(out_dir / "curves.csv", "w") as file:
        file.write(",".join(CSV_FIELDS) + "\n")
        for row in rows:
            file.write(",".join(str(int(row[k])) if k in ("seed", "env_steps", "learner_step") else
                                (row[k] if k == "agent" else f"{row[k]:.2f}") for k in CSV_FIELDS) + "\n")
    curves = {}
    for run in summaries:
        agent, seed = run["agent"], run["seed"]
        seed_rows = [row for row in rows if row["agent"] == agent and row["seed"] == seed]
        label = agent if len(seeds) == 1 else f"{agent} s{seed}"
        curves[label] = ([row["env_steps"] for row in seed_rows], [row["mean_return"] for row in seed_rows])
    reference = published.reference_lines(task, 100_000)
    if "random_policy" in provenance:
        reference[f"random policy {provenance['random_policy']['mean_return']:.0f}"] = provenance["random_policy"]["mean_return"]
    plots.plot_learning_curves(curves, str(out_dir / "learning_curves.png"),
                                  title=f"{task}, {max_env_steps:,} env steps, {setting}", reference=reference)
    final = {agent: statistics.mean(s["final_eval_return"] for s in summaries if s["agent"] == agent) for agent in agents}
    result = {**provenance, "task": task, "max_env_steps": max_env_steps, "seeds": seeds,
              "mean_final_eval_return": final, "runs": summaries}
    with open(out_dir / "summary.json", "w") as file:
        json.dump(result, file, indent=2, sort_keys=True)
    for agent in agents:
        agent_seeds = sorted(s["seed"] for s in summaries if s["agent"] == agent)
        print(f"{agent}: mean final eval return {final[agent]:.1f} over seeds {agent_seeds}")
    print(f"wrote {out_dir}/curves.csv, learning_curves.png, summary.json")
