"""RaE experiment: the same agent and seed from scratch and with an earlier run's data replayed.

    python -m experiments.bench rae --source=RUN_DIR --agent=mog --env=cartpole:swingup \\
        --seed=1 --max_env_steps=100000 --out_dir=experiments/results/rae-cartpole_swingup [--parallel]

Both runs use the same step budget and seed; the RaE run adds `--rae_from=SOURCE`
(50% of every batch from the source run unless --rae_ratio says otherwise). The out
directory (new) gets curves.csv, learning_curves.png and summary.json with each run's
final return and the env steps each needed to first reach 90% of the from-scratch
final return. `--parallel` runs the two at once (each is rate-limited, so how much it
learns per env step does not depend on sharing the machine).
"""

import argparse
import json
import pathlib
import subprocess
import sys

from experiments import results_io
from experiments.curves import first_reaching
from launch.rundir import plots
from launch.rundir import summary as run_summary

CSV_FIELDS = ("variant", "env_steps", "learner_step", "mean_return", "std_return")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="run directory whose experience is replayed")
    parser.add_argument("--agent", default="mog")
    parser.add_argument("--env", default="cartpole:swingup")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max_env_steps", type=int, default=100_000)
    parser.add_argument("--num_actors", type=int, default=2)
    parser.add_argument("--rae_ratio", type=float, default=0.5)
    parser.add_argument("--eval_every_learner_steps", type=int, default=500)
    parser.add_argument("--preset", default="default", help="train's --preset for every run (default, small, acme, debug)")
    parser.add_argument("--parallel", action="store_true", help="run both at once")
    parser.add_argument("--out_dir", default=None, help="new directory for the results (default runs/bench/rae-<task>-<time>)")


def run(args: argparse.Namespace) -> int:
    out_dir, runs_root = results_io.new_results_dir("rae", args.env, args.out_dir)
    base = [sys.executable, "-m", "experiments.train", f"--agent={args.agent}", f"--env={args.env}",
            f"--num_actors={args.num_actors}", f"--max_env_steps={args.max_env_steps}", f"--seed={args.seed}",
            f"--preset={args.preset}", f"--set=experiment.eval_every_learner_steps={args.eval_every_learner_steps}"]
    variants = {
        "scratch": base + [f"--run_dir={runs_root / 'scratch'}"],
        "rae": base + [f"--run_dir={runs_root / 'rae'}", f"--rae_from={args.source}", f"--rae_ratio={args.rae_ratio}"],
    }
    processes = {}
    for name, command in variants.items():
        print("$", " ".join(["python"] + command[1:]), flush=True)
        log = open(out_dir / f"train-{name}.log", "w")
        processes[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log)
        if not args.parallel:
            processes[name][0].wait()
    for name, (process, log) in processes.items():
        if process.wait() != 0:
            raise SystemExit(f"error: the {name} run exited with {process.returncode}; see {log.name}.")
        log.close()

    curves = {name: run_summary.evaluations(str(runs_root / name)) for name in variants}
    with open(out_dir / "curves.csv", "w") as file:
        file.write(",".join(CSV_FIELDS) + "\n")
        for name, rows in curves.items():
            for row in rows:
                file.write(f"{name},{int(row['env_steps'])},{int(row['learner_step'])},"
                           f"{row['mean_return']:.2f},{row['std_return']:.2f}\n")
    scratch_final = curves["scratch"][-1]["mean_return"]
    threshold = 0.9 * scratch_final
    result = {
        "command": " ".join(["python -m experiments.bench rae"] + sys.argv[2:]),
        "source": str(pathlib.Path(args.source).resolve()),
        "agent": args.agent, "task": args.env, "seed": args.seed, "max_env_steps": args.max_env_steps,
        "rae_ratio": args.rae_ratio,
        "threshold_90_percent_of_scratch_final": threshold,
        "variants": {name: {"final_eval_return": rows[-1]["mean_return"], "final_eval_env_steps": int(rows[-1]["env_steps"]),
                            "best_eval_return": max(row["mean_return"] for row in rows),
                            "env_steps_to_threshold": first_reaching(rows, threshold),
                            "run_dir": str(runs_root / name)}
                     for name, rows in curves.items()},
    }
    with open(out_dir / "summary.json", "w") as file:
        json.dump(result, file, indent=2, sort_keys=True)
    plots.plot_learning_curves(
        {f"{args.agent} seed {args.seed}, {name}": ([r["env_steps"] for r in rows], [r["mean_return"] for r in rows])
         for name, rows in curves.items()},
        str(out_dir / "learning_curves.png"), title=f"RaE on {args.env}: from scratch vs replaying {pathlib.Path(args.source).name}",
        reference={"90% of scratch final": threshold})
    for name, variant in result["variants"].items():
        print(f"{name}: final eval {variant['final_eval_return']:.1f}, reached {threshold:.1f} (90% of scratch final) "
              f"at {variant['env_steps_to_threshold']} env steps")
    print(f"wrote {out_dir}/curves.csv, learning_curves.png, summary.json")
    return 0
