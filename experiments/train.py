"""Trains an agent with the distributed program: replay, learner, actors, counter.

    python -m experiments.train --agent=mog --env=cartpole:swingup --num_actors=2 [--envs_per_actor=1] \
        --max_env_steps=100000 --seed=0 [--run_dir=...] [--launch_type=local_mp] \
        [--preset=debug] [--set learner.learning_rate=3e-4 --set replay.batch_size=512]
    python -m experiments.train --resume=RUN_DIR [--max_env_steps=200000]
    python -m experiments.train ... --init_from=RUN_DIR_or_CHECKPOINT[:policy|critic|all]

Every flag and config value is checked before any process starts. The run writes
only under its run directory (default runs/<env>/<agent>/<UTC time>-s<seed>).
"""

import dataclasses
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
_ENVS_PER_ACTOR = flags.DEFINE_integer("envs_per_actor", 1, "environments each actor steps, one policy call for all")
_MAX_ENV_STEPS = flags.DEFINE_integer("max_env_steps", 100_000, "stop after this many environment steps")
_SEED = flags.DEFINE_integer("seed", 0, "experiment seed")
_RUN_DIR = flags.DEFINE_string("run_dir", None, "default runs/<env>/<agent>/<UTC time>-s<seed>")
_LAUNCH_TYPE = flags.DEFINE_enum("launch_type", "local_mp", ["local_mt", "local_mp"], "threads or processes")
_PRESET = flags.DEFINE_enum("preset", "default", list(configs.PRESETS),
                            "default: Relay's dm_control settings (control: the same); small: cheaper for 2-core "
                            "CPUs (make run); acme: Acme's MPOConfig verbatim; debug shrinks every size")
_RAE_FROM = flags.DEFINE_list("rae_from", [], "RaE: earlier run directories or globs whose experience is replayed")
_RAE_RATIO = flags.DEFINE_float("rae_ratio", 0.5, "RaE: share of every batch drawn from the earlier runs")
_RAE_FINAL_RATIO = flags.DEFINE_float("rae_final_ratio", None, "RaE: anneal the share linearly to this value")
_RAE_ANNEAL_STEPS = flags.DEFINE_integer("rae_anneal_steps", 0, "RaE: learner steps over which the share is annealed")
_RAE_MAX_STEPS = flags.DEFINE_integer("rae_max_steps", None, "RaE: keep each run's most recent this many steps")
_RAE_MIN_RETURN = flags.DEFINE_float("rae_min_return", None, "RaE: keep episodes with at least this return")
_RAE_SKIP_CORRUPT = flags.DEFINE_bool("rae_skip_corrupt", False, "RaE: load the readable rest of a damaged run")
_RESUME = flags.DEFINE_string("resume", None, "continue this stopped or killed run from its newest checkpoint, "
                               "with its own config (only --max_env_steps and --launch_type may change)")
_INIT_FROM = flags.DEFINE_string("init_from", None, "start from the networks of RUN_DIR (its newest checkpoint) or of "
                                 "one checkpoint directory; append :policy, :critic or :all (default)")
_SET = flags.DEFINE_multi_string("set", [], "config override section.field=value (learner, replay, environment, experiment)")


def default_run_dir(task: str, agent: str, seed: int) -> str:
    return str(pathlib.Path("runs", task.replace(":", "_"), agent, f"{results_io.timestamp()}-s{seed}"))


def resolve_rae(config, run_dir: str):
    """The RaE config for --rae_from, with the earlier runs checked and their transitions counted."""
    import environments
    from launch import loading
    from launch.config import RaEConfig
    from replay import offline

    # The share and anneal are checked before any data is read.
    rae = RaEConfig(runs=("-",), ratio=_RAE_RATIO.value, max_steps=_RAE_MAX_STEPS.value, min_return=_RAE_MIN_RETURN.value,
                    skip_corrupt=_RAE_SKIP_CORRUPT.value, final_ratio=_RAE_FINAL_RATIO.value,
                    anneal_learner_steps=_RAE_ANNEAL_STEPS.value)
    runs = offline.resolve_runs(_RAE_FROM.value)
    if os.path.abspath(run_dir) in runs:
        raise ValueError(f"--rae_from includes this run's own directory {run_dir}.")
    env = environments.make_environment(config.environment)
    spec = env.environment_spec
    env.close()
    for run in runs:
        offline.check_compatible(run, config.environment.task, spec.observations.shape, spec.actions.shape)
    rae = dataclasses.replace(rae, runs=tuple(runs))
    loaded = offline.summarize(loading.rae_selection(rae))
    if loaded["steps"] == 0:
        raise ValueError(f"--rae_from: the selection from {', '.join(runs)} holds no transitions; "
                         "loosen --rae_min_return or --rae_max_steps.")
    print(f"RaE: {loaded['runs']} runs, {loaded['episodes']} episodes, {loaded['steps']} steps, "
          f"mean episode return {loaded['mean_return']:.1f}, {_RAE_RATIO.value:.0%} of every batch"
          + (f", annealed to {_RAE_FINAL_RATIO.value:.0%} over {_RAE_ANNEAL_STEPS.value} learner steps"
             if _RAE_FINAL_RATIO.value is not None else ""))
    for path in loaded["skipped_files"]:
        print(f"RaE: skipped unreadable {path}")
    return dataclasses.replace(rae, offline_items=loaded["steps"])


def resolve_init_from(config):
    """The InitFromConfig for --init_from, with the checkpoint loaded and its shapes checked against this run's."""
    import agents
    import environments
    import jax
    from launch import checkpoints
    from launch.config import InitFromConfig

    path, parts = checkpoints.parse_init_spec(_INIT_FROM.value)
    checkpoint = checkpoints.reporting_skips(checkpoints.resolve, path)
    spec = environments.make_environment(config.environment).environment_spec
    learner = agents.Learner(config.learner, spec.observations.shape[0], spec.actions.shape[0])
    checkpoints.check_networks(learner.init(jax.random.PRNGKey(config.seed)), checkpoint, parts)
    meta = checkpoint.meta
    print(f"Initialising {'the policy and critic' if parts == 'all' else 'the ' + parts} from {checkpoint.path} "
          f"(learner step {checkpoint.step}, {meta.get('agent')} on {meta.get('task')})")
    return InitFromConfig(checkpoint=checkpoint.path, parts=parts)


# Flags that describe a new run; --resume takes all of that from the run's config.json.
_NEW_RUN_FLAGS = ("agent", "env", "num_actors", "envs_per_actor", "seed", "run_dir", "preset", "set", "init_from",
                  "rae_from", "rae_ratio", "rae_final_ratio", "rae_anneal_steps", "rae_max_steps", "rae_min_return", "rae_skip_corrupt")


def resolve_resume(run_dir: str):
    """The run's own config, set to continue from its newest loadable checkpoint."""
    from launch import checkpoints, loading
    from launch.config import ExperimentConfig, ResumeConfig, dataclass_from_json
    from launch.summary import read_json
    from replay import offline

    given = [f"--{name}" for name in _NEW_RUN_FLAGS if flags.FLAGS[name].present]
    if given:
        raise ValueError(f"--resume continues a run with its own config; drop {', '.join(given)} "
                         "(only --max_env_steps and --launch_type can change).")
    saved = read_json(os.path.join(run_dir, "config.json"))
    if saved is None:
        raise ValueError(f"--resume={run_dir}: no config.json there, so it is not a Relay run directory.")
    config = dataclass_from_json(ExperimentConfig, saved)
    if os.path.abspath(run_dir) != config.run_dir:
        config = dataclasses.replace(config, run_dir=os.path.abspath(run_dir))  # the run was moved
    if flags.FLAGS["max_env_steps"].present:
        config = dataclasses.replace(config, max_env_steps=_MAX_ENV_STEPS.value)
    if checkpoints.list_steps(run_dir):
        checkpoint, damaged = checkpoints.reporting_skips(checkpoints.load_latest, run_dir)
        for path in checkpoints.set_aside(damaged, run_dir):
            print(f"Moved the damaged checkpoint to {path}")
        counts = {**checkpoint.meta["counts"], "learner_steps": checkpoint.step}
    else:
        checkpoint, counts = None, {}
        print(f"warning: {run_dir} has no checkpoint yet: the learner starts afresh, with the run's recorded "
              "data back in replay.", file=sys.stderr)
    # The monitor's last count: the checkpoint's totals may be up to a second older.
    env_steps_done = max(counts.get("actor_steps", 0), (read_json(os.path.join(run_dir, "progress.json")) or {}).get("env_steps", 0))
    if env_steps_done >= config.max_env_steps:
        raise ValueError(f"{run_dir} already took {env_steps_done:,.0f} env steps of its {config.max_env_steps:,}; "
                         "pass a larger --max_env_steps to train it further.")
    # The loader node's own selection, counted here.
    refill = loading.refill_selection(config).steps
    rae = config.rae
    if rae is not None:
        rae = dataclasses.replace(rae, offline_items=offline.summarize(loading.rae_selection(rae))["steps"])
    launch_index = (config.resume.launch_index if config.resume is not None else 0) + 1
    resume = ResumeConfig(checkpoint=checkpoint.path if checkpoint else None, counts=tuple(sorted(counts.items())),
                          refill_items=refill, launch_index=launch_index)
    print(f"Resuming {run_dir} (launch {launch_index + 1}) from "
          + (f"learner step {checkpoint.step}" if checkpoint else "scratch")
          + f": env steps {counts.get('actor_steps', 0):,.0f}, {refill:,} recorded transitions back into replay")
    return dataclasses.replace(config, resume=resume, rae=rae)


def prepare_run_dir(run_dir: str) -> None:
    """Creates the run directory; refuses one that already holds a run."""
    path = pathlib.Path(run_dir)
    if path.exists() and any(path.iterdir()):
        raise ValueError(f"Run directory {run_dir} already holds a run and is never overwritten; pass another --run_dir.")
    path.mkdir(parents=True, exist_ok=True)


def new_run_config(run_dir: str):
    config = configs.make_experiment_config(
        agent=_AGENT.value, task=_ENV.value, run_dir=os.path.abspath(run_dir), seed=_SEED.value,
        num_actors=_NUM_ACTORS.value, max_env_steps=_MAX_ENV_STEPS.value, preset=_PRESET.value, overrides=_SET.value,
        envs_per_actor=_ENVS_PER_ACTOR.value,
    )
    if _RAE_FROM.value:
        config = dataclasses.replace(config, rae=resolve_rae(config, run_dir))
    if _INIT_FROM.value:
        config = dataclasses.replace(config, init_from=resolve_init_from(config))
    prepare_run_dir(run_dir)
    return config


def write_config(config) -> None:
    """config.json (the latest launch's), and for a resumed run one more entry in resumes.json."""
    from launch.summary import read_json, write_json

    if config.resume is not None:
        history = read_json(os.path.join(config.run_dir, "resumes.json")) or []
        history.append({**dataclasses.asdict(config.resume), "time_utc": results_io.timestamp()})
        write_json(os.path.join(config.run_dir, "resumes.json"), history)
    write_json(os.path.join(config.run_dir, "config.json"), dataclasses.asdict(config))


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        if _RESUME.value:
            run_dir = _RESUME.value
            config = resolve_resume(run_dir)
        else:
            run_dir = _RUN_DIR.value or default_run_dir(_ENV.value, _AGENT.value, _SEED.value)
            config = new_run_config(run_dir)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_config(config)

    # Launchpad and the program are imported only for a valid launch.
    from experiments import plotting, progress
    from launch import launching, summary
    from launch.program import make_program

    print(f"Run directory: {run_dir}")
    start = time.time()
    launch_index = config.resume.launch_index if config.resume is not None else 0
    manager = launching.launch(make_program(config), _LAUNCH_TYPE.value, run_dir, launch_index)
    done = threading.Event()
    printer = threading.Thread(target=progress.show_progress, args=(run_dir, done), daemon=True)
    printer.start()
    manager.wait()
    done.set()
    printer.join()
    result = summary.write_summary(run_dir, time.time() - start, config.resume)
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
