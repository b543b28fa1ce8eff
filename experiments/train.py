"""Trains an agent with the distributed program: replay, learner, actors, counter.

    python -m experiments.train --agent=mog --env=cartpole:swingup --num_actors=2 \
        --max_env_steps=100000 --seed=0 [--run_dir=...] [--launch_type=local_mp] \
        [--preset=debug] [--set learner.learning_rate=3e-4 --set replay.batch_size=512]

Every flag and config value is checked before any process starts. The run writes
only under its run directory (default runs/<env>/<agent>/<UTC time>-s<seed>).
"""

import dataclasses
import json
import os
import pathlib
import sys
import threading
import time

from absl import app, flags

from experiments import configs, results_io

_AGENT = flags.DEFINE_string("agent", "mog", "mpo, dmpo or mog")
_ENV = flags.DEFINE_string("env", "cartpole:swingup", "dm_control task, domain:task")
_NUM_ACTORS = flags.DEFINE_integer("num_actors", 2, "actor processes")
_MAX_ENV_STEPS = flags.DEFINE_integer("max_env_steps", 100_000, "stop after this many environment steps")
_SEED = flags.DEFINE_integer("seed", 0, "experiment seed")
_RUN_DIR = flags.DEFINE_string("run_dir", None, "default runs/<env>/<agent>/<UTC time>-s<seed>")
_LAUNCH_TYPE = flags.DEFINE_enum("launch_type", "local_mp", ["local_mt", "local_mp"], "threads or processes")
_PRESET = flags.DEFINE_enum("preset", "default", list(configs.PRESETS), "debug shrinks every size")
_SET = flags.DEFINE_multi_string("set", [], "config override section.field=value (learner, replay, environment, experiment)")


def default_run_dir(task: str, agent: str, seed: int) -> str:
    return str(pathlib.Path("runs", task.replace(":", "_"), agent, f"{results_io.timestamp()}-s{seed}"))


def prepare_run_dir(run_dir: str) -> None:
    """Creates the run directory; refuses one that already holds a run."""
    path = pathlib.Path(run_dir)
    if path.exists() and any(path.iterdir()):
        raise ValueError(f"Run directory {run_dir} already holds a run and is never overwritten; pass another --run_dir.")
    path.mkdir(parents=True, exist_ok=True)


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    run_dir = _RUN_DIR.value or default_run_dir(_ENV.value, _AGENT.value, _SEED.value)
    try:
        config = configs.make_experiment_config(
            agent=_AGENT.value, task=_ENV.value, run_dir=os.path.abspath(run_dir), seed=_SEED.value,
            num_actors=_NUM_ACTORS.value, max_env_steps=_MAX_ENV_STEPS.value, preset=_PRESET.value, overrides=_SET.value,
        )
        prepare_run_dir(run_dir)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with open(os.path.join(run_dir, "config.json"), "w") as file:
        json.dump(dataclasses.asdict(config), file, indent=2, sort_keys=True)

    # Launchpad and the program are imported only for a valid launch.
    from experiments import plotting, progress
    from launch import launching, summary
    from launch.program import make_program

    print(f"Run directory: {run_dir}")
    start = time.time()
    manager = launching.launch(make_program(config), _LAUNCH_TYPE.value, run_dir)
    done = threading.Event()
    printer = threading.Thread(target=progress.show_progress, args=(run_dir, done), daemon=True)
    printer.start()
    manager.wait()
    done.set()
    printer.join()
    result = summary.write_summary(run_dir, time.time() - start)
    rows = summary.evaluations(run_dir)
    plotting.plot_learning_curves(
        {config.agent: ([row["env_steps"] for row in rows], [row["mean_return"] for row in rows])},
        os.path.join(run_dir, "learning_curve.png"), title=f"{config.agent} on {config.environment.task}, seed {config.seed}",
    )
    final = result["final_eval_return"]
    print(f"Finished: {result['env_steps']} env steps, {result['learner_steps']} learner steps in "
          f"{result['wall_time_s']:.0f} s; final eval return {'n/a' if final is None else f'{final:.1f}'}. "
          f"Outputs in {run_dir}")
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
