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
_RAE_FROM = flags.DEFINE_list("rae_from", [], "RaE: earlier run directories or globs whose experience is replayed")
_RAE_RATIO = flags.DEFINE_float("rae_ratio", 0.5, "RaE: share of every batch drawn from the earlier runs")
_RAE_FINAL_RATIO = flags.DEFINE_float("rae_final_ratio", None, "RaE: anneal the share linearly to this value")
_RAE_ANNEAL_STEPS = flags.DEFINE_integer("rae_anneal_steps", 0, "RaE: learner steps over which the share is annealed")
_RAE_MAX_STEPS = flags.DEFINE_integer("rae_max_steps", None, "RaE: keep each run's most recent this many steps")
_RAE_MIN_RETURN = flags.DEFINE_float("rae_min_return", None, "RaE: keep episodes with at least this return")
_RAE_SKIP_CORRUPT = flags.DEFINE_bool("rae_skip_corrupt", False, "RaE: load the readable rest of a damaged run")
_SET = flags.DEFINE_multi_string("set", [], "config override section.field=value (learner, replay, environment, experiment)")


def default_run_dir(task: str, agent: str, seed: int) -> str:
    return str(pathlib.Path("runs", task.replace(":", "_"), agent, f"{results_io.timestamp()}-s{seed}"))


def resolve_rae(config, run_dir: str):
    """The RaE config for --rae_from, with the earlier runs checked and their transitions counted."""
    import environments
    from launch.config import RaEConfig
    from replay import offline

    # The share and anneal are checked before any data is read.
    RaEConfig(runs=("-",), ratio=_RAE_RATIO.value, final_ratio=_RAE_FINAL_RATIO.value,
              anneal_learner_steps=_RAE_ANNEAL_STEPS.value)
    runs = offline.resolve_runs(_RAE_FROM.value)
    if os.path.abspath(run_dir) in runs:
        raise ValueError(f"--rae_from includes this run's own directory {run_dir}.")
    env = environments.make_environment(config.environment)
    spec = env.environment_spec
    env.close()
    for run in runs:
        offline.check_compatible(run, config.environment.task, spec.observations.shape, spec.actions.shape)
    selected = [offline.select_experience(run, _RAE_MAX_STEPS.value, _RAE_MIN_RETURN.value, _RAE_SKIP_CORRUPT.value)
                for run in runs]
    loaded = offline.summarize(selected)
    if loaded["steps"] == 0:
        raise ValueError(f"--rae_from: the selection from {', '.join(runs)} holds no transitions; "
                         "loosen --rae_min_return or --rae_max_steps.")
    print(f"RaE: {loaded['runs']} runs, {loaded['episodes']} episodes, {loaded['steps']} steps, "
          f"mean episode return {loaded['mean_return']:.1f}, {_RAE_RATIO.value:.0%} of every batch"
          + (f", annealed to {_RAE_FINAL_RATIO.value:.0%} over {_RAE_ANNEAL_STEPS.value} learner steps"
             if _RAE_FINAL_RATIO.value is not None else ""))
    for path in loaded["skipped_files"]:
        print(f"RaE: skipped unreadable {path}")
    return RaEConfig(runs=tuple(runs), ratio=_RAE_RATIO.value, max_steps=_RAE_MAX_STEPS.value,
                     min_return=_RAE_MIN_RETURN.value, skip_corrupt=_RAE_SKIP_CORRUPT.value,
                     final_ratio=_RAE_FINAL_RATIO.value, anneal_learner_steps=_RAE_ANNEAL_STEPS.value,
                     offline_items=loaded["steps"])


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
        if _RAE_FROM.value:
            config = dataclasses.replace(config, rae=resolve_rae(config, run_dir))
        prepare_run_dir(run_dir)
    except (ValueError, FileNotFoundError) as error:
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
