"""Trains an agent with the distributed program: replay, learner, actors, counter.

    python -m experiments.train --agent=mog --env=cartpole:swingup --num_actors=2 [--envs_per_actor=1] \
        --max_env_steps=100000 --seed=0 [--run_dir=...] [--launch_type=local_mp] \
        [--preset=debug] [--set learner.learning_rate=3e-4 --set replay.batch_size=512]
    python -m experiments.train --resume=RUN_DIR [--max_env_steps=200000]
    python -m experiments.train ... --init_from=RUN_DIR_or_CHECKPOINT[:policy|critic|all]
    python -m experiments.train ... --launch_type=slurm --cluster=cluster.json [--dry_run] [--detach]
    python -m experiments.train ... --launch_type=hosts --cluster=cluster.json

Every flag and config value is checked before any process starts. The run writes
only under its run directory (default runs/<env>/<agent>/<UTC time>-s<seed>).
"""

import os
import sys

from absl import app, flags

from experiments import configs

_AGENT = flags.DEFINE_string("agent", "mog", "mpo, dmpo or mog")
_ENV = flags.DEFINE_string("env", "cartpole:swingup", "dm_control task, domain:task")
_NUM_ACTORS = flags.DEFINE_integer("num_actors", 2, "actor processes")
_ENVS_PER_ACTOR = flags.DEFINE_integer("envs_per_actor", 1, "environments each actor steps, one policy call for all")
_MAX_ENV_STEPS = flags.DEFINE_integer("max_env_steps", 100_000, "stop after this many environment steps")
_SEED = flags.DEFINE_integer("seed", 0, "experiment seed")
_RUN_DIR = flags.DEFINE_string("run_dir", None, "default runs/<env>/<agent>/<UTC time>-s<seed>")
_LAUNCH_TYPE = flags.DEFINE_enum("launch_type", "local_mp", ["local_mt", "local_mp", "hosts", "slurm"],
                                  "local_mt: threads of one process; local_mp: a process per node on this machine; "
                                  "hosts: across the hosts of --cluster, no scheduler; slurm: one SLURM job placed as "
                                  "--cluster says")
_CLUSTER = flags.DEFINE_string("cluster", None, "cluster spec JSON (launch.runtime.cluster): hosts or SLURM components per group")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "slurm: print the job script and cluster spec, submit nothing")
_DETACH = flags.DEFINE_bool("detach", False, "slurm: return once the job is submitted instead of following it")
_SLURM_PARTITION = flags.DEFINE_string("slurm_partition", None, "slurm: partition (overrides the cluster spec's)")
_SLURM_ACCOUNT = flags.DEFINE_string("slurm_account", None, "slurm: account (overrides the cluster spec's)")
_SLURM_TIME = flags.DEFINE_string("slurm_time", None, "slurm: time limit, sbatch --time syntax (overrides the spec's)")
_SLURM_MAX_JOBS = flags.DEFINE_integer("slurm_max_jobs", None, "slurm: the run goes on in up to this many jobs across "
                                       "time limits, requeues and lost hosts (overrides the spec's max_jobs, 10)")
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
                               "with its own config (only --max_env_steps and the launch flags may change)")
_INIT_FROM = flags.DEFINE_string("init_from", None, "start from the networks of RUN_DIR (its newest checkpoint) or of "
                                 "one checkpoint directory; append :policy, :critic or :all (default)")
_SET = flags.DEFINE_multi_string("set", [], "config override section.field=value (learner, replay, environment, experiment)")


# Flags that describe a new run; --resume takes all of that from the run's config.json.
_NEW_RUN_FLAGS = ("agent", "env", "num_actors", "envs_per_actor", "seed", "run_dir", "preset", "set", "init_from",
                  "rae_from", "rae_ratio", "rae_final_ratio", "rae_anneal_steps", "rae_max_steps", "rae_min_return", "rae_skip_corrupt")


def run_request():
    """What the flags ask for: a new run (`launch.NewRun`) or a resume (`launch.Resume`)."""
    from launch import NewRun, RaERequest, Resume
    from launch.runtime.run_setup import default_run_dir

    if _RESUME.value:
        given = [f"--{name}" for name in _NEW_RUN_FLAGS if flags.FLAGS[name].present]
        if given:
            raise ValueError(f"--resume continues a run with its own config; drop {', '.join(given)} "
                             "(only --max_env_steps, --launch_type, --cluster and the --slurm_* flags can change).")
        return Resume(_RESUME.value, _MAX_ENV_STEPS.value if flags.FLAGS["max_env_steps"].present else None)
    run_dir = _RUN_DIR.value or default_run_dir(_ENV.value, _AGENT.value, _SEED.value)
    config = configs.make_experiment_config(
        agent=_AGENT.value, task=_ENV.value, run_dir=os.path.abspath(run_dir), seed=_SEED.value,
        num_actors=_NUM_ACTORS.value, max_env_steps=_MAX_ENV_STEPS.value, preset=_PRESET.value, overrides=_SET.value,
        envs_per_actor=_ENVS_PER_ACTOR.value)
    rae = None
    if _RAE_FROM.value:
        rae = RaERequest(runs=tuple(_RAE_FROM.value), ratio=_RAE_RATIO.value, final_ratio=_RAE_FINAL_RATIO.value,
                         anneal_learner_steps=_RAE_ANNEAL_STEPS.value, max_steps=_RAE_MAX_STEPS.value,
                         min_return=_RAE_MIN_RETURN.value, skip_corrupt=_RAE_SKIP_CORRUPT.value)
    return NewRun(config, rae=rae, init_from=_INIT_FROM.value)


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from launch import LaunchOptions, launch

    try:
        request = run_request()
        options = LaunchOptions(launch_type=_LAUNCH_TYPE.value, cluster=_CLUSTER.value,
                                slurm_partition=_SLURM_PARTITION.value, slurm_account=_SLURM_ACCOUNT.value,
                                slurm_time=_SLURM_TIME.value,
                                slurm_max_jobs=_SLURM_MAX_JOBS.value, dry_run=_DRY_RUN.value, detach=_DETACH.value)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return launch(request, options)


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
