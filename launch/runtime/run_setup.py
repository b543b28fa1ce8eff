"""A run's config made ready to launch, with everything checked before any process starts:
a new run (its directory never another run's; RaE's earlier runs and --init_from's
checkpoint read and checked), or a resume (the run's own config, from its newest
loadable checkpoint).

The requests are what `launch.runtime.launch` takes:

    NewRun(config, rae=RaERequest(runs=("runs/a", "runs/b*"), ratio=0.5), init_from="RUN:policy")
    Resume(run_dir, max_env_steps=200_000)
"""

import dataclasses
import os
import pathlib
import sys
from typing import Optional, Sequence

from launch.config import ExperimentConfig, InitFromConfig, RaEConfig, ResumeConfig
from launch.rundir import checkpoints
from launch.rundir.jsonio import read_json
from launch.rundir.paths import RunPaths, timestamp
from launch.rundir.run_config import read_config


@dataclasses.dataclass(frozen=True)
class RaERequest:
    """--rae_from and its settings: earlier runs (directories or globs) whose experience is replayed."""

    runs: Sequence[str]
    ratio: float = 0.5
    final_ratio: Optional[float] = None
    anneal_learner_steps: int = 0
    max_steps: Optional[int] = None
    min_return: Optional[float] = None
    skip_corrupt: bool = False


@dataclasses.dataclass(frozen=True)
class NewRun:
    """A run to start: `config` (its run_dir must be new or empty), RaE, and the networks to start from
    ("RUN_DIR_or_CHECKPOINT[:policy|critic|all]")."""

    config: ExperimentConfig
    rae: Optional[RaERequest] = None
    init_from: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Resume:
    """A stopped or killed run to continue with its own config; only the step limit may change."""

    run_dir: str
    max_env_steps: Optional[int] = None


def default_run_dir(task: str, agent: str, seed: int) -> str:
    return str(pathlib.Path("runs", task.replace(":", "_"), agent, f"{timestamp()}-s{seed}"))


def check_run_dir(run_dir: str) -> None:
    """Refuses a run directory that already holds a run."""
    path = pathlib.Path(run_dir)
    if path.exists() and any(path.iterdir()):
        raise ValueError(f"Run directory {run_dir} already holds a run and is never overwritten; pass another --run_dir.")


def resolve_rae(config: ExperimentConfig, request: RaERequest, spec) -> RaEConfig:
    """The RaE config for `request`, with the earlier runs checked and their transitions counted."""
    from launch.nodes import loader
    from replay import offline

    # The share and anneal are checked before any data is read.
    rae = RaEConfig(runs=("-",), ratio=request.ratio, max_steps=request.max_steps, min_return=request.min_return,
                    skip_corrupt=request.skip_corrupt, final_ratio=request.final_ratio,
                    anneal_learner_steps=request.anneal_learner_steps)
    runs = offline.resolve_runs(list(request.runs))
    if os.path.abspath(config.run_dir) in runs:
        raise ValueError(f"--rae_from includes this run's own directory {config.run_dir}.")
    for run in runs:
        offline.check_compatible(run, config.environment.task, spec)
    rae = dataclasses.replace(rae, runs=tuple(runs))
    loaded = offline.summarize(loader.rae_selection(rae))
    if loaded["steps"] == 0:
        raise ValueError(f"--rae_from: the selection from {', '.join(runs)} holds no transitions; "
                         "loosen --rae_min_return or --rae_max_steps.")
    print(f"RaE: {loaded['runs']} runs, {loaded['episodes']} episodes, {loaded['steps']} steps, "
          f"mean episode return {loaded['mean_return']:.1f}, {request.ratio:.0%} of every batch"
          + (f", annealed to {request.final_ratio:.0%} over {request.anneal_learner_steps} learner steps"
             if request.final_ratio is not None else ""))
    for path in loaded["skipped_files"]:
        print(f"RaE: skipped unreadable {path}")
    return dataclasses.replace(rae, offline_items=loaded["steps"])


def resolve_init_from(config: ExperimentConfig, init_from: str, spec) -> InitFromConfig:
    """The InitFromConfig for --init_from, with the checkpoint loaded and its shapes checked against this run's."""
    import agents
    import jax

    path, parts = checkpoints.parse_init_spec(init_from)
    checkpoint = checkpoints.reporting_skips(checkpoints.resolve, path)
    learner = agents.Learner(config.learner, spec.observations.shape, spec.actions.shape[0])
    if parts == "policy" and learner.networks.pixels and not learner.networks.policy_has_own_encoder:
        raise ValueError(f"--init_from={init_from}: this run learns from pixels with a shared encoder, which "
                         "is part of the critic; the policy alone would read a fresh encoder's features. Take "
                         f"{path}:all (or give the policy its own encoder: --set encoder.shared=false).")
    checkpoints.check_networks(learner.init(jax.random.PRNGKey(config.seed)), checkpoint, parts)
    meta = checkpoint.meta
    print(f"Initialising {'the policy and critic' if parts == 'all' else 'the ' + parts} from {checkpoint.path} "
          f"(learner step {checkpoint.step}, {meta.get('agent')} on {meta.get('task')})")
    return InitFromConfig(checkpoint=checkpoint.path, parts=parts)


def prepare_new_run(request: NewRun, create: bool = True):
    """The new run's config and its environment's spec (computed once, here, for every node);
    the run directory is created (`create`) or only checked."""
    import environments

    # Node processes start elsewhere (the repository root, other hosts): the run directory is absolute.
    config = dataclasses.replace(request.config, run_dir=os.path.abspath(request.config.run_dir))
    spec = environments.environment_spec(config.environment)
    if request.rae is not None:
        config = dataclasses.replace(config, rae=resolve_rae(config, request.rae, spec))
    if request.init_from is not None:
        config = dataclasses.replace(config, init_from=resolve_init_from(config, request.init_from, spec))
    check_run_dir(config.run_dir)
    if create:
        pathlib.Path(config.run_dir).mkdir(parents=True, exist_ok=True)
    return config, spec


def prepare_resume(request: Resume):
    """The run's own config, set to continue from its newest loadable checkpoint, and its spec."""
    import environments
    from launch.nodes import loader
    from replay import offline

    run_dir = request.run_dir
    config = read_config(run_dir)
    if request.max_env_steps is not None:
        config = dataclasses.replace(config, max_env_steps=request.max_env_steps)
    if checkpoints.list_steps(run_dir):
        checkpoint, damaged = checkpoints.reporting_skips(checkpoints.load_latest, run_dir)
        for path in checkpoints.set_aside(damaged, run_dir):
            print(f"Moved the damaged checkpoint to {path}")
        counts = {**checkpoint.meta["counts"], "learner_steps": checkpoint.step}
    else:
        checkpoint, counts = None, {}
        print(f"warning: {run_dir} has no checkpoint yet: the learner starts afresh, with the run's recorded "
              "data back in replay.", file=sys.stderr)
    # The counter's last saved totals: the checkpoint's may be older.
    saved_counts = read_json(RunPaths(run_dir).counts) or {}
    env_steps_done = max(counts.get("actor_steps", 0), saved_counts.get("actor_steps", 0))
    if env_steps_done >= config.max_env_steps:
        raise ValueError(f"{run_dir} already took {env_steps_done:,.0f} env steps of its {config.max_env_steps:,}; "
                         "pass a larger --max_env_steps to train it further.")
    # The loader node's own selection, counted here.
    refill = loader.refill_selection(config).steps
    rae = config.rae
    if rae is not None:
        rae = dataclasses.replace(rae, offline_items=offline.summarize(loader.rae_selection(rae))["steps"])
    launch_index = config.launch_index + 1
    resume = ResumeConfig(checkpoint=checkpoint.path if checkpoint else None, counts=tuple(sorted(counts.items())),
                          refill_items=refill, launch_index=launch_index)
    print(f"Resuming {run_dir} (launch {launch_index + 1}) from "
          + (f"learner step {checkpoint.step}" if checkpoint else "scratch")
          + f": env steps {counts.get('actor_steps', 0):,.0f}, {refill:,} recorded transitions back into replay")
    config = dataclasses.replace(config, resume=resume, rae=rae)
    return config, environments.environment_spec(config.environment)
