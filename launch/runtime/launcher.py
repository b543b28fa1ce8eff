"""`launch()`: the one way a run starts, whatever the launch type.

    from launch.runtime import LaunchOptions, NewRun, Resume, launch
    launch(NewRun(config), LaunchOptions(launch_type="local_mp"))      # config: launch.config.ExperimentConfig
    launch(Resume("runs/cartpole_swingup/mpo/<time>-s0", max_env_steps=200_000))

It checks everything before any process starts, writes config.json, builds the program
(`launch.program.make_program`) and runs it: as threads of this process (local_mt), as one
supervised process per node on this machine (local_mp) or on the hosts of a cluster spec
(hosts), or as a SLURM job (slurm). It shows the progress line until the program ends,
and watches the launch's processes (`launch.runtime.watch`): a failed node or a Ctrl-C
stops the program through its counter. Then it draws the learning curve and prints what
the run did.
"""

import dataclasses
import faulthandler
import json
import os
import signal
import sys
import threading
from typing import Optional, Union

from launch.config import ExperimentConfig
from launch.rundir import plots, summary
from launch.rundir.jsonio import read_json
from launch.rundir.paths import RunPaths
from launch.rundir.run_config import write_config
from launch.runtime import cluster
from launch.runtime.run_setup import NewRun, Resume, prepare_new_run, prepare_resume
from launch.runtime.supervisor import RestartPolicy

LAUNCH_TYPES = ("local_mt", "local_mp", "hosts", "slurm")
# What a first Ctrl-C or SIGTERM to a launcher is called in the run's stop reason.
_STOP_SIGNALS = {signal.SIGINT: "Ctrl-C in the launcher", signal.SIGTERM: "SIGTERM to the launcher"}


@dataclasses.dataclass(frozen=True)
class LaunchOptions:
    """How a run is launched (nothing here changes what it computes)."""

    # local_mt: threads of one process; local_mp: a process per node on this machine; hosts:
    # across the hosts of `cluster`, no scheduler; slurm: one SLURM job placed as `cluster` says.
    launch_type: str = "local_mp"
    cluster: Optional[str] = None  # the cluster spec's JSON file (launch.runtime.cluster), hosts and slurm only
    # SLURM: overrides of the cluster spec's options.
    slurm_partition: Optional[str] = None
    slurm_account: Optional[str] = None
    slurm_time: Optional[str] = None  # sbatch --time syntax
    slurm_max_jobs: Optional[int] = None  # the jobs a run may go on in (time limits, lost hosts, requeues)
    dry_run: bool = False  # slurm: print the job script and cluster spec, submit nothing
    detach: bool = False  # slurm: return once the job is submitted instead of following it

    def __post_init__(self):
        if self.launch_type not in LAUNCH_TYPES:
            raise ValueError(f"Unknown launch type {self.launch_type!r}; choose one of {', '.join(LAUNCH_TYPES)}.")
        if self.dry_run and self.launch_type != "slurm":
            raise ValueError("--dry_run is for --launch_type=slurm.")


def load_cluster(options: LaunchOptions) -> Optional[cluster.ClusterSpec]:
    """The cluster spec with the SLURM overrides applied; None for a launch on this machine."""
    if options.launch_type in ("local_mt", "local_mp"):
        if options.cluster:
            raise ValueError(f"--cluster is for --launch_type=hosts or slurm, not {options.launch_type}.")
        return None
    if not options.cluster:
        raise ValueError(f"--launch_type={options.launch_type} needs --cluster=SPEC.json (see docs/multinode.md).")
    spec = cluster.load(options.cluster)
    spec.check_program(cluster.PROGRAM_GROUPS, need_hosts=options.launch_type == "hosts")
    overrides = {name: value for name, value in (("partition", options.slurm_partition),
                                                 ("account", options.slurm_account), ("time", options.slurm_time),
                                                 ("max_jobs", options.slurm_max_jobs))
                 if value}
    return dataclasses.replace(spec, slurm=dataclasses.replace(spec.slurm, **overrides)) if overrides else spec


def launch(run: Union[NewRun, Resume], options: LaunchOptions = LaunchOptions()) -> int:
    """Launches `run` as `options` say and follows it to its end. Returns the exit code: 0 when
    the program ended well, 1 when a node failed (or a SLURM job did), 2 for bad input (said
    before anything started)."""
    try:
        cluster_spec = load_cluster(options)
        if isinstance(run, Resume):
            from launch.runtime.progress import running_counter

            going = running_counter(run.run_dir)
            if going:  # two launches of one run would write the same files
                raise ValueError(f"{run.run_dir} is still going (its counter answers at {going}); stop it first "
                                 "(Ctrl-C its launcher, or scancel its job), or let it end.")
            config, spec = prepare_resume(run)
        else:
            config, spec = prepare_new_run(run, create=not options.dry_run)
        if options.dry_run:
            return _dry_run(config, cluster_spec)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_config(config)
    from launch.program import make_program  # Launchpad and the nodes only for a valid launch

    print(f"Run directory: {_shown(config.run_dir)}")
    program = make_program(config, spec)
    if options.launch_type == "local_mt":
        code = _run_threads(program, config)
    elif options.launch_type in ("local_mp", "hosts"):
        code = run_processes(program, config, cluster_spec)
    else:
        try:
            code = _run_slurm(program, config, cluster_spec, options.detach)
        except RuntimeError as error:  # sbatch refused the job
            print(f"error: {error}", file=sys.stderr)
            return 1
        if options.detach:
            return code
    report(config)
    return code


def _shown(run_dir: str) -> str:
    """The run directory as a user gave it: relative to here when it is below here."""
    relative = os.path.relpath(run_dir)
    return run_dir if relative.startswith("..") else relative


def _follow(run_dir: str, counter_address, wait, job_of_chain=lambda: None):
    """Shows the progress line (from the counter, once `counter_address()` knows it) until
    `wait()` returns; returns what it returns. `job_of_chain()`: (k, n) for a run in job k of
    at most n (SLURM), else None."""
    from launch.runtime import progress

    fetchers = {}

    def fetch():
        address = counter_address()
        if address is None:
            return None  # the counter has not started yet
        if address not in fetchers:
            fetchers[address] = progress.counter_progress(address)
        figures = fetchers[address]()
        job = job_of_chain()
        return dict(figures, job=job) if figures is not None and job is not None else figures

    done = threading.Event()
    printer = threading.Thread(target=progress.show_progress, args=(run_dir, fetch, done), daemon=True)
    printer.start()
    try:
        return wait()
    finally:
        done.set()
        printer.join()


def _run_threads(program, config: ExperimentConfig) -> int:
    """local_mt: Launchpad runs every node as a thread of this process (no supervision)."""
    from launch.faults import RunError
    from launch.runtime import threads

    from launch.runtime.entry import announce_counter

    manager = threads.launch_threads(program)
    address = threads.counter_address(program)
    announce_counter(RunPaths(config.run_dir).launch_dir(config.launch_index), address)
    code = 0
    try:
        _follow(config.run_dir, lambda: address, manager.wait)
    except RunError as error:  # a node's, re-raised by Launchpad once every thread stopped
        print(f"error: {error}", file=sys.stderr)
        code = 1
    faulthandler.cancel_dump_traceback_later()  # every thread stopped in time
    return code


def run_processes(program, config: ExperimentConfig, cluster_spec: Optional[cluster.ClusterSpec] = None) -> int:
    """local_mp (`cluster_spec` None: every node on this machine) and hosts: starts `program`'s
    node processes, shows the progress line and watches them until they end; the exit code.
    The benchmarks' acting program (launch.program.make_acting_program) goes through it too."""
    from launch.runtime import hosts
    from launch.runtime.supervisor import describe_exit
    from launch.runtime.watch import LaunchWatch, failures

    processes = hosts.HostsLaunch(program, cluster_spec or hosts.local_spec(), config.run_dir, config.launch_index,
                                  RestartPolicy.of_experiment(config))
    with LaunchWatch(processes.processes, processes.request_stop, processes.terminate, log_of=processes.log_path,
                     signals=_STOP_SIGNALS, restart=processes.relaunch) as watch:
        processes.start()
        codes = _follow(config.run_dir, lambda: processes.coordinator, watch.run)
    failed = failures(codes)
    if failed:
        print(f"error: {', '.join(f'{name} failed ({describe_exit(code)})' for name, code in failed.items())}; "
              "their logs: " + ", ".join(processes.log_path(name) for name in failed), file=sys.stderr)
        return 1
    return 0


def _job_name(config: ExperimentConfig) -> str:
    return f"relay-{config.agent}-{config.environment.task.replace(':', '_')}-s{config.seed}"


def _run_slurm(program, config: ExperimentConfig, cluster_spec: cluster.ClusterSpec, detach: bool) -> int:
    from launch.nodes import rpc
    from launch.rundir.jobs import current_job, note_job
    from launch.runtime import entry, slurm_submit
    from launch.runtime.watch import LaunchWatch

    paths = RunPaths(config.run_dir)
    scripts = slurm_submit.write_job(program, cluster_spec, config.run_dir, config.launch_index, _job_name(config),
                              RestartPolicy.of_experiment(config))
    job_ids = slurm_submit.submit(scripts)
    jobs = " ".join(job_ids)
    chained = cluster_spec.slurm.heterogeneous
    if chained:  # the run may go on in later jobs (the job driver, launch.runtime.slurm); jobs.jsonl follows it
        note_job(config.run_dir, "submitted", job_id=job_ids[0], job_number=1,
                 max_jobs=cluster_spec.slurm.max_jobs, launch_index=config.launch_index)
    print(f"Submitted SLURM job{'s' if len(job_ids) > 1 else ''} {jobs} ({', '.join(scripts)}); "
          f"node logs under {paths.logs_dir(config.launch_index)}")
    if detach:
        print(f"Detached. Follow it with squeue -j {','.join(job_ids)} or python -m experiments.runs list; "
              f"stop it with scancel {jobs}" + (" (or the job it has gone on in, in jobs.jsonl)." if chained else "."))
        return 0
    coordinators = {}

    def current_launch() -> int:
        job = current_job(config.run_dir) if chained else None
        return job["launch_index"] if job else config.launch_index

    def counter_address() -> Optional[str]:
        launch_index = current_launch()
        if launch_index not in coordinators:
            try:
                coordinators[launch_index] = entry.wait_for_coordinator(paths.launch_dir(launch_index), 0.0)
            except TimeoutError:
                return None
        return coordinators[launch_index]

    if chained:
        job_processes = {"SLURM job": slurm_submit.JobChain(config.run_dir, job_ids[0])}
    else:
        job_processes = {f"SLURM job {job_id}": slurm_submit.Job(job_id) for job_id in job_ids}

    def current_jobs() -> list:
        return [getattr(job, "job", job) for job in job_processes.values()]

    def cancel(force: bool) -> None:
        ids = [job.job_id for job in current_jobs()]
        print(f"\nCancelling {' '.join(ids)}.", flush=True)
        slurm_submit.cancel(ids)

    def job_of_chain() -> Optional[tuple]:
        job = current_job(config.run_dir) if chained else None
        return (job["job_number"], job["max_jobs"]) if job else None

    # A counter not up yet or gone: the jobs are cancelled.
    with LaunchWatch(job_processes, lambda reason: rpc.ask_to_stop(counter_address(), reason), cancel,
                     signals=_STOP_SIGNALS, interval_s=0.5) as watch:
        _follow(config.run_dir, counter_address, watch.run, job_of_chain)
    for job in current_jobs():
        print(f"SLURM job {job.job_id}: {job.state or 'ended'}")
    return 0 if all(job.poll() == 0 for job in job_processes.values()) else 1


def _dry_run(config: ExperimentConfig, cluster_spec: cluster.ClusterSpec) -> int:
    from launch.runtime import slurm_submit

    print("# cluster spec (each component's hosts are filled in from SLURM's node lists when the job starts)")
    print(json.dumps(cluster.to_json(cluster_spec), indent=2))
    launch_dir = RunPaths(config.run_dir).launch_dir(config.launch_index)
    for name, script in slurm_submit.sbatch_scripts(cluster_spec, launch_dir, config.run_dir, _job_name(config)):
        print(f"# {os.path.join(launch_dir, name)}")
        print(script)
    return 0


def report(config: ExperimentConfig) -> None:
    """The learning curve (learning_curve.png) and a line of what the run did, from its summary."""
    paths, shown = RunPaths(config.run_dir), _shown(config.run_dir)
    result = read_json(paths.summary)
    if result is None:
        print(f"No summary.json in {shown}: the counter node did not finish; see the logs under {shown}/logs.",
              file=sys.stderr)
        return
    rows = summary.evaluations(config.run_dir)
    plots.plot_learning_curves(
        {config.agent: ([row["env_steps"] for row in rows], [row["mean_return"] for row in rows])},
        paths.learning_curve, title=f"{config.agent} on {config.environment.task}, seed {config.seed}",
    )
    restarts = result.get("restarts") or []
    if restarts:
        print(f"{len(restarts)} node restarts (each in {shown}/restarts.jsonl): "
              + ", ".join(f"{record['node']} ({record['cause']})" for record in restarts))
    if result.get("stop_reason") and not result["reached_max_env_steps"]:
        print(f"The run stopped before max_env_steps: {result['stop_reason']}", file=sys.stderr)
    final = result["final_eval_return"]
    print(f"Finished: {result['env_steps']} env steps, {result['learner_steps']} learner steps in "
          f"{result['wall_time_s']:.0f} s; final eval return {'n/a' if final is None else f'{final:.1f}'}. "
          f"Outputs in {shown}")
