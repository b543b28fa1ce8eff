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

import dataclasses
import faulthandler
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
_ENVS_PER_ACTOR = flags.DEFINE_integer("envs_per_actor", 1, "environments each actor steps, one policy call for all")
_MAX_ENV_STEPS = flags.DEFINE_integer("max_env_steps", 100_000, "stop after this many environment steps")
_SEED = flags.DEFINE_integer("seed", 0, "experiment seed")
_RUN_DIR = flags.DEFINE_string("run_dir", None, "default runs/<env>/<agent>/<UTC time>-s<seed>")
_LAUNCH_TYPE = flags.DEFINE_enum("launch_type", "local_mp", ["local_mt", "local_mp", "hosts", "slurm"],
                                  "local_mt: threads of one process; local_mp: a process per node on this machine; "
                                  "hosts: across the hosts of --cluster, no scheduler; slurm: one SLURM job placed as "
                                  "--cluster says")
_CLUSTER = flags.DEFINE_string("cluster", None, "cluster spec JSON (launch.cluster): hosts or SLURM components per group")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "slurm: print the job script and cluster spec, submit nothing")
_DETACH = flags.DEFINE_bool("detach", False, "slurm: return once the job is submitted instead of following it")
_SLURM_PARTITION = flags.DEFINE_string("slurm_partition", None, "slurm: partition (overrides the cluster spec's)")
_SLURM_ACCOUNT = flags.DEFINE_string("slurm_account", None, "slurm: account (overrides the cluster spec's)")
_SLURM_TIME = flags.DEFINE_string("slurm_time", None, "slurm: time limit, sbatch --time syntax (overrides the spec's)")
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


def default_run_dir(task: str, agent: str, seed: int) -> str:
    return str(pathlib.Path("runs", task.replace(":", "_"), agent, f"{results_io.timestamp()}-s{seed}"))


def resolve_rae(config, run_dir: str, spec):
    """The RaE config for --rae_from, with the earlier runs checked and their transitions counted."""
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
    for run in runs:
        offline.check_compatible(run, config.environment.task, spec)
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


def resolve_init_from(config, spec):
    """The InitFromConfig for --init_from, with the checkpoint loaded and its shapes checked against this run's."""
    import agents
    import jax
    from launch import checkpoints
    from launch.config import InitFromConfig

    path, parts = checkpoints.parse_init_spec(_INIT_FROM.value)
    checkpoint = checkpoints.reporting_skips(checkpoints.resolve, path)
    learner = agents.Learner(config.learner, spec.observations.shape, spec.actions.shape[0])
    if parts == "policy" and learner.networks.pixels and not learner.networks.policy_has_own_encoder:
        raise ValueError(f"--init_from={_INIT_FROM.value}: this run learns from pixels with a shared encoder, which "
                         "is part of the critic; the policy alone would read a fresh encoder's features. Take "
                         f"{path}:all (or give the policy its own encoder: --set encoder.shared=false).")
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
    from launch.summary import COUNTS_FILE, read_json
    from replay import offline

    given = [f"--{name}" for name in _NEW_RUN_FLAGS if flags.FLAGS[name].present]
    if given:
        raise ValueError(f"--resume continues a run with its own config; drop {', '.join(given)} "
                         "(only --max_env_steps, --launch_type, --cluster and the --slurm_* flags can change).")
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
    # The counter's last saved totals: the checkpoint's may be older.
    saved_counts = read_json(os.path.join(run_dir, COUNTS_FILE)) or {}
    env_steps_done = max(counts.get("actor_steps", 0), saved_counts.get("actor_steps", 0))
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


def check_run_dir(run_dir: str) -> None:
    """Refuses a run directory that already holds a run."""
    path = pathlib.Path(run_dir)
    if path.exists() and any(path.iterdir()):
        raise ValueError(f"Run directory {run_dir} already holds a run and is never overwritten; pass another --run_dir.")


def prepare_run_dir(run_dir: str) -> None:
    """Creates the run directory; refuses one that already holds a run."""
    check_run_dir(run_dir)
    pathlib.Path(run_dir).mkdir(parents=True, exist_ok=True)


def new_run_config(run_dir: str, create: bool = True):
    """The new run's config and its environment's spec (computed once, here, for every node)."""
    import environments

    config = configs.make_experiment_config(
        agent=_AGENT.value, task=_ENV.value, run_dir=os.path.abspath(run_dir), seed=_SEED.value,
        num_actors=_NUM_ACTORS.value, max_env_steps=_MAX_ENV_STEPS.value, preset=_PRESET.value, overrides=_SET.value,
        envs_per_actor=_ENVS_PER_ACTOR.value,
    )
    spec = environments.environment_spec(config.environment)
    if _RAE_FROM.value:
        config = dataclasses.replace(config, rae=resolve_rae(config, run_dir, spec))
    if _INIT_FROM.value:
        config = dataclasses.replace(config, init_from=resolve_init_from(config, spec))
    if create:
        prepare_run_dir(run_dir)
    else:
        check_run_dir(run_dir)
    return config, spec


def write_config(config) -> None:
    """config.json (the latest launch's), and for a resumed run one more entry in resumes.json."""
    from launch.summary import read_json, write_json

    if config.resume is not None:
        history = read_json(os.path.join(config.run_dir, "resumes.json")) or []
        history.append({**dataclasses.asdict(config.resume), "time_utc": results_io.timestamp()})
        write_json(os.path.join(config.run_dir, "resumes.json"), history)
    write_json(os.path.join(config.run_dir, "config.json"), dataclasses.asdict(config))


def load_cluster():
    """The --cluster spec with the --slurm_* flags applied; None for a launch on this machine."""
    from launch import cluster

    if _LAUNCH_TYPE.value in ("local_mt", "local_mp"):
        if _CLUSTER.value:
            raise ValueError(f"--cluster is for --launch_type=hosts or slurm, not {_LAUNCH_TYPE.value}.")
        return None
    if not _CLUSTER.value:
        raise ValueError(f"--launch_type={_LAUNCH_TYPE.value} needs --cluster=SPEC.json (see the README's multi-node section).")
    spec = cluster.load(_CLUSTER.value)
    spec.check_program(cluster.PROGRAM_GROUPS, need_hosts=_LAUNCH_TYPE.value == "hosts")
    overrides = {name: flag.value for name, flag in
                 (("partition", _SLURM_PARTITION), ("account", _SLURM_ACCOUNT), ("time", _SLURM_TIME)) if flag.value}
    return dataclasses.replace(spec, slurm=dataclasses.replace(spec.slurm, **overrides)) if overrides else spec


def follow(run_dir: str, counter_address, wait) -> None:
    """Shows the progress line (from the counter) until `wait()` returns."""
    from experiments import progress

    fetchers = {}

    def fetch():
        address = counter_address()
        if address is None:
            return None  # the counter has not started yet
        if address not in fetchers:
            fetchers[address] = progress.counter_progress(address)
        return fetchers[address]()

    done = threading.Event()
    printer = threading.Thread(target=progress.show_progress, args=(run_dir, fetch, done), daemon=True)
    printer.start()
    try:
        wait()
    finally:
        done.set()
        printer.join()


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_on_hosts(program, cluster_spec, run_dir: str, launch_index: int, max_restarts: int) -> int:
    """local_mp (every node on this machine: `cluster_spec` None) and hosts."""
    import signal

    from launch import hosts, supervisor

    launch = hosts.HostsLaunch(program, cluster_spec or hosts.local_spec(), run_dir, launch_index, max_restarts)
    # SIGTERM to the launcher stops the program as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        launch.start()
    except KeyboardInterrupt:  # while the counter was starting: the nodes started so far go too
        launch.terminate()
        raise

    def wait():
        try:
            launch.wait()
        except KeyboardInterrupt:
            print("\nStopping every node (Ctrl-C again to kill them)...", flush=True)
            try:
                if not launch.request_stop("Ctrl-C in the launcher") or not launch.wait(60.0):
                    launch.terminate()
            except KeyboardInterrupt:
                launch.terminate(grace_s=0.0)

    follow(run_dir, lambda: launch.coordinator, wait)
    failed = launch.failed()
    if failed:
        print(f"error: nodes failed: {', '.join(f'{node} ({supervisor.describe_exit(code)})' for node, code in failed.items())}; "
              "their logs: " + ", ".join(launch.log_path(*node.split("/")) for node in failed), file=sys.stderr)
        return 1
    return 0


def run_on_slurm(program, cluster_spec, run_dir: str, launch_index: int, job_name: str, max_restarts: int) -> int:
    from launch import entry, launching, rpc, slurm

    scripts = slurm.write_job(program, cluster_spec, run_dir, launch_index, job_name, max_restarts)
    job_ids = slurm.submit(scripts)
    launch_dir = launching.launch_dir(run_dir, launch_index)
    jobs = " ".join(job_ids)
    print(f"Submitted SLURM job{'s' if len(job_ids) > 1 else ''} {jobs} ({', '.join(scripts)}); "
          f"node logs under {launching.logs_dir(run_dir, launch_index)}")
    if _DETACH.value:
        print(f"Detached. Follow it with squeue -j {','.join(job_ids)} or python -m experiments.runs list; "
              f"stop it with scancel {jobs}.")
        return 0
    coordinator = {}

    def counter_address():
        if "address" not in coordinator:
            try:
                coordinator["address"] = entry.wait_for_coordinator(launch_dir, 0.0)
            except TimeoutError:
                return None
        return coordinator["address"]

    def wait():
        interrupted = False
        while True:
            try:
                if not slurm.active(job_ids):
                    return
                time.sleep(0.5)
            except KeyboardInterrupt:
                if interrupted or counter_address() is None:
                    print(f"\nCancelling {jobs}.", flush=True)
                    slurm.cancel(job_ids)
                    continue
                interrupted = True
                print("\nStopping the job's nodes (Ctrl-C again to scancel it)...", flush=True)
                try:
                    rpc.final_client(counter_address(), call_timeout_s=2.0).request_stop("Ctrl-C in the launcher")
                except Exception:  # the counter is gone: cancel
                    slurm.cancel(job_ids)

    follow(run_dir, counter_address, wait)
    states = [slurm.job_state(job_id) for job_id in job_ids]
    for job_id, state in zip(job_ids, states):
        print(f"SLURM job {job_id}: {state or 'ended'}")
    return 0 if all(state in (None, "COMPLETED", "CANCELLED") for state in states) else 1


def report(config, run_dir: str) -> None:
    from experiments import plotting
    from launch import summary

    result = summary.read_json(os.path.join(run_dir, "summary.json"))
    if result is None:
        print(f"No summary.json in {run_dir}: the counter node did not finish; see the logs under {run_dir}/logs.",
              file=sys.stderr)
        return
    rows = summary.evaluations(run_dir)
    plotting.plot_learning_curves(
        {config.agent: ([row["env_steps"] for row in rows], [row["mean_return"] for row in rows])},
        os.path.join(run_dir, "learning_curve.png"), title=f"{config.agent} on {config.environment.task}, seed {config.seed}",
    )
    restarts = result.get("restarts") or []
    if restarts:
        print(f"{len(restarts)} node restarts (each in {run_dir}/restarts.jsonl): "
              + ", ".join(f"{record['node']} ({record['cause']})" for record in restarts))
    if result.get("stop_reason") and not result["reached_max_env_steps"]:
        print(f"The run stopped before max_env_steps: {result['stop_reason']}", file=sys.stderr)
    final = result["final_eval_return"]
    print(f"Finished: {result['env_steps']} env steps, {result['learner_steps']} learner steps in "
          f"{result['wall_time_s']:.0f} s; final eval return {'n/a' if final is None else f'{final:.1f}'}. "
          f"Outputs in {run_dir}")


def dry_run(config, cluster_spec, run_dir: str, launch_index: int) -> int:
    from launch import cluster, launching, slurm

    if _LAUNCH_TYPE.value != "slurm":
        raise ValueError("--dry_run is for --launch_type=slurm.")
    print("# cluster spec (each component's hosts are filled in from SLURM's node lists when the job starts)")
    print(json.dumps(cluster.to_json(cluster_spec), indent=2))
    launch_dir = launching.launch_dir(run_dir, launch_index)
    for name, script in slurm.sbatch_scripts(cluster_spec, launch_dir, run_dir, _job_name(config)):
        print(f"# {os.path.join(launch_dir, name)}")
        print(script)
    return 0


def _job_name(config) -> str:
    return f"relay-{config.agent}-{config.environment.task.replace(':', '_')}-s{config.seed}"


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        cluster_spec = load_cluster()
        if _RESUME.value:
            run_dir = _RESUME.value
            config = resolve_resume(run_dir)
            import environments

            spec = environments.environment_spec(config.environment)
        else:
            run_dir = _RUN_DIR.value or default_run_dir(_ENV.value, _AGENT.value, _SEED.value)
            config, spec = new_run_config(run_dir, create=not _DRY_RUN.value)
        launch_index = config.resume.launch_index if config.resume is not None else 0
        if _DRY_RUN.value:
            return dry_run(config, cluster_spec, run_dir, launch_index)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_config(config)

    # Launchpad and the program are imported only for a valid launch.
    from launch import launching
    from launch.faults import RunError
    from launch.program import make_program

    print(f"Run directory: {run_dir}")
    program = make_program(config, spec)
    if _LAUNCH_TYPE.value == "local_mt":
        manager = launching.launch_threads(program)
        address = launching.counter_address(program)
        code = 0
        try:
            follow(run_dir, lambda: address, manager.wait)
        except RunError as error:  # a node's, re-raised by Launchpad once every thread stopped
            print(f"error: {error}", file=sys.stderr)
            code = 1
        faulthandler.cancel_dump_traceback_later()  # every thread stopped in time
    elif _LAUNCH_TYPE.value in ("local_mp", "hosts"):
        code = run_on_hosts(program, cluster_spec, run_dir, launch_index, config.max_restarts_per_node)
    else:
        try:
            code = run_on_slurm(program, cluster_spec, run_dir, launch_index, _job_name(config),
                                config.max_restarts_per_node)
        except RuntimeError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        if _DETACH.value:
            return code
    report(config, run_dir)
    return code


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
