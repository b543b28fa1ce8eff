"""Sweeps: seeds and variants as one command, each wave of runs replaying earlier waves' data.

    python -m experiments.sweep plan SPEC.json [--dir=SWEEP_DIR]
    python -m experiments.sweep run SPEC.json --dir=SWEEP_DIR [--parallel=N] [--detach] \\
        [--launch_type=local_mp|hosts|slurm --cluster=CLUSTER.json --slurm_time=...]
    python -m experiments.sweep run SWEEP_DIR            # again: only what is missing
    python -m experiments.sweep run SWEEP_DIR --only=agents/walker_walk,tasks   # some of its runs
    python -m experiments.sweep status SWEEP_DIR
    python -m experiments.sweep stop SWEEP_DIR
    python -m experiments.sweep report SWEEP_DIR [--out=DIR] [--with=EARLIER/report.json]

plan:   checks the spec (every run's whole config) and lists its runs; starts nothing.
run:    starts every run that is missing, N at a time, each an ordinary run directory under
        SWEEP_DIR (experiments/sweep/sweep_dir.py): finished runs are skipped, unfinished ones
        resumed from their newest checkpoint, one still going is left to go on. A later wave's
        run starts once the runs it replays have finished. --detach: the runner goes on in the
        background (its output in SWEEP_DIR/launcher_logs/). --only: just the runs it names, by
        their paths in the sweep or the first parts of them, shell patterns allowed; the rest are
        left as they are (e.g. to share a sweep's runs between machines).
status: each run's state, env steps and newest evaluation.
stop:   stops the sweep's runners and every run going, cleanly (each saves its checkpoint).
report: the table (final and best return: mean, min-max, bootstrap interval across seeds;
        env steps; wall time) as CSV and Markdown, and curves per task (mean and band).
        --with: runs with no directory here take their figures from an earlier report.
"""

import argparse
import json
import os
import signal
import subprocess
import sys

from experiments.sweep.sweep_dir import SPEC_FILE, NotASweep, open_sweep, start_sweep

# The spec, runner, status and report modules import the agents (JAX) or matplotlib: each command
# imports what it uses, once its directory has been checked.


def _plan(args) -> int:
    from experiments.sweep.spec import load_spec, sources

    runs = load_spec(args.spec)
    waves = list(dict.fromkeys(run.wave for run in runs))
    print(f"{len(runs)} runs in {len(waves)} wave{'s' if len(waves) > 1 else ''} ({', '.join(waves)})")
    for run in runs:
        replayed = sources(run, runs)
        chosen = f"the best {run.replay.best} of " if replayed and run.replay.best else ""
        print(f"  {run.run_dir(args.dir)}  {run.max_env_steps:,} env steps"
              + (f"  replays {chosen}{len(replayed)} run{'s' if len(replayed) > 1 else ''} of "
                 f"{', '.join(run.replay.waves)} at {run.replay.ratio:g}" if replayed else ""))
    return 0


def _launch_flags(args, existing):
    """The launch flags given, or (none given, the sweep run again) those of its last runner."""
    from experiments.sweep.runner import LaunchFlags
    from launch.runtime.launcher import LaunchOptions, load_cluster

    given = {"launch_type": args.launch_type, "cluster": args.cluster, "slurm": tuple(args.slurm_flags)}
    if args.launch_type is None:
        last = existing.last_launch() if existing is not None else None
        if last is not None and (args.cluster or args.slurm_flags):
            raise ValueError(f"--cluster and --slurm_* go with --launch_type; this sweep last ran with "
                             f"--launch_type={last['launch_type']}.")
        given = last or dict(given, launch_type="local_mp")
        if last is not None:
            print(f"Launching as the sweep's last runner did: --launch_type={last['launch_type']}"
                  + (f" --cluster={last['cluster']}" if last["cluster"] else "") + "".join(f" {f}" for f in last["slurm"]))
    flags = LaunchFlags(given["launch_type"], given["cluster"], tuple(given["slurm"]))
    options = {name: int(value) if name == "slurm_max_jobs" else value
               for name, value in (flag[2:].split("=", 1) for flag in flags.slurm)}
    try:  # the launch's own checks (the cluster spec read), before anything is written
        load_cluster(LaunchOptions(launch_type=flags.launch_type, cluster=flags.cluster, **options))
    except FileNotFoundError as error:
        raise ValueError(str(error)) from None
    return flags


def _selected(sweep, runs, only):
    """The runs --only names (all without it); ValueError if one of them replays a run that is
    left out and has not finished (in `sweep`, None for one not started), which it would wait for."""
    from experiments.sweep.spec import select_runs, sources
    from experiments.sweep.state import FINISHED, run_status

    if not only:
        return runs
    selected = select_runs(runs, only.split(","))
    for run in selected:
        waiting_on = [f"{source.wave}/{source.name}" for source in sources(run, runs) if source not in selected
                      and (sweep is None or run_status(sweep, source, probe=False).state != FINISHED)]
        if waiting_on:
            raise ValueError(f"--only: {run.wave}/{run.name} replays {', '.join(waiting_on)}, which --only leaves "
                             f"out and which {'has' if len(waiting_on) == 1 else 'have'} not finished; name "
                             f"{'it' if len(waiting_on) == 1 else 'them'} too.")
    return selected


def _run(args) -> int:
    from experiments.sweep import runner as sweep_runner
    from experiments.sweep.spec import load_spec

    if args.parallel is not None and args.parallel < 1:
        raise ValueError(f"--parallel must be at least 1, got {args.parallel}.")
    if os.path.isdir(args.spec) and args.dir is None:  # run SWEEP_DIR: again, with its own spec
        sweep = open_sweep(args.spec)
        launch = _launch_flags(args, sweep)
    else:
        if args.dir is None:
            raise NotASweep(f"{args.spec} is not a directory, and a spec ({args.spec}) needs its sweep's: "
                            f"python -m experiments.sweep run SWEEP_DIR, or run SPEC.json --dir=SWEEP_DIR")
        existing = open_sweep(args.dir) if os.path.isfile(os.path.join(args.dir, SPEC_FILE)) else None
        _selected(existing, load_spec(args.spec), args.only)  # every check, before anything is written
        launch = _launch_flags(args, existing)
        with open(args.spec) as file:
            sweep = start_sweep(args.dir, json.load(file))
    runs = sweep.runs()
    selected = _selected(sweep, runs, args.only)
    parallel = args.parallel or sweep_runner.default_parallel(selected, launch.launch_type)
    if args.detach:
        return _detach(sweep, args)
    sweep.clear_stop()
    sweep.note_runner("start", argv=sys.argv[1:], parallel=parallel, launch=launch.as_record())
    print(f"Sweep {sweep.root}: {len(runs)} runs"
          + (f", {len(selected)} of them named by --only" if selected is not runs else "")
          + f", {parallel} at a time ({launch.launch_type}); "
          f"python -m experiments.sweep status {sweep.root} shows where each stands")
    runner = sweep_runner.SweepRunner(sweep, runs, parallel, launch, only=selected)

    def on_signal(signum, frame):
        runner.stop("Ctrl-C" if signum == signal.SIGINT else "SIGTERM")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = runner.run(poll_s=10.0 if launch.launch_type == "slurm" else 2.0)
    sweep.note_runner("end", code=code)
    return code


def _detach(sweep, args) -> int:
    """The runner again, without --detach, in a session of its own: it outlives this shell."""
    log_path = sweep.runner_log()
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    # -u: its log is read while it runs.
    argv = [sys.executable, "-u", "-m", "experiments.sweep"] + [a for a in sys.argv[1:] if a != "--detach"]
    with open(log_path, "a") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    print(f"Detached: the sweep runner is pid {process.pid}; its output goes to {log_path}.\n"
          f"  python -m experiments.sweep status {sweep.root}   where each run stands\n"
          f"  python -m experiments.sweep stop {sweep.root}     stops it cleanly")
    return 0


def _status(args) -> int:
    sweep = open_sweep(args.dir)
    from experiments.sweep import status as sweep_status

    print(sweep_status.format_status(sweep, sweep.runs()))
    return 0


def _stop(args) -> int:
    sweep = open_sweep(args.dir)
    from experiments.sweep import status as sweep_status

    return sweep_status.stop_sweep(sweep, sweep.runs(), args.wait_s)


def _report(args) -> int:
    sweep = open_sweep(args.dir)
    from experiments.sweep import report as sweep_report

    written = sweep_report.write_report(sweep, sweep.runs(), args.out or sweep.report_dir, args.earlier)
    print("wrote " + ", ".join(written))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="check a spec and list its runs")
    plan.add_argument("spec", help="the sweep spec, JSON (experiments/sweep/spec.py)")
    plan.add_argument("--dir", default="SWEEP_DIR", help="the sweep's directory (runs go under it)")
    run = commands.add_parser("run", help="start what is missing")
    run.add_argument("spec", help="the sweep spec (JSON), or an existing sweep's directory")
    run.add_argument("--dir", default=None, help="the sweep's directory: new or empty, or this spec's sweep")
    run.add_argument("--parallel", type=int, default=None,
                     help="runs at once (default: one per 4 cores here, 1 on hosts, all under SLURM)")
    run.add_argument("--launch_type", default=None, choices=["local_mt", "local_mp", "hosts", "slurm"],
                     help="default: local_mp, or for a sweep run again, what its last runner used")
    run.add_argument("--cluster", default=None, help="cluster spec JSON, for hosts and slurm")
    run.add_argument("--detach", action="store_true", help="the runner goes on in the background")
    run.add_argument("--only", default=None,
                     help="comma-separated runs to start, as <wave>[/<task>[/<label>[/seed<k>]]], shell "
                          "patterns allowed (default: every run)")
    for name in ("slurm_partition", "slurm_account", "slurm_time", "slurm_max_jobs"):
        run.add_argument(f"--{name}", default=None, type=int if name == "slurm_max_jobs" else str,
                         help=f"as experiments.train's --{name}")
    status = commands.add_parser("status", help="each run's state and newest evaluation")
    status.add_argument("dir")
    stop = commands.add_parser("stop", help="stop the sweep cleanly")
    stop.add_argument("dir")
    stop.add_argument("--wait_s", type=float, default=300.0, help="how long to wait for the runs to stop")
    report = commands.add_parser("report", help="table and curves")
    report.add_argument("dir")
    report.add_argument("--out", default=None, help="where the report goes (default SWEEP_DIR/report)")
    report.add_argument("--with", dest="earlier", default=None,
                        help="an earlier report.json of this spec: the runs with no directory here take "
                             "their figures from it")
    args = parser.parse_args(argv)
    if args.command == "run":
        args.slurm_flags = [f"--{name}={getattr(args, name)}" for name in
                            ("slurm_partition", "slurm_account", "slurm_time", "slurm_max_jobs")
                            if getattr(args, name) is not None]
    try:
        return {"plan": _plan, "run": _run, "status": _status, "stop": _stop, "report": _report}[args.command](args)
    except ValueError as error:  # SpecError and NotASweep among them
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
