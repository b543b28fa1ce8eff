"""Launchpad programs: the nodes of a Relay experiment, how they are wired, and how they run.

    launch/
        config.py      ExperimentConfig: what a run computes
        rundir/        what a run leaves on disk: paths, JSON, metrics, checkpoints, summary, plots
        faults/        RunError, the non-finite guard, a full disk
        loops/         the loops nodes, benchmarks and tests drive: actor, learner, episodes
        nodes/         Launchpad nodes around the loops: actor, learner, evaluator, monitor,
                       counter, replay server, loader; RPC between them
        program.py     make_program(config, spec) -> lp.Program
        runtime/       launch(): local_mt, local_mp, hosts, slurm; entry point, supervisor,
                       the watch over a launch's processes, cluster spec, ports, progress line

Imports go down that list's reverse: runtime -> program -> nodes -> loops -> rundir, faults
(tests/test_layout.py checks it). `from launch import launch, LaunchOptions, NewRun, Resume`
is the API a launch script uses (launch.runtime.launcher).
"""

from launch import moved

moved.install()

_API = ("launch", "LaunchOptions", "NewRun", "Resume", "RaERequest")


def __getattr__(name):
    # Imported when asked for: `import launch.loops.actor` must not import the whole runtime.
    if name in _API:
        from launch.runtime import launcher, run_setup

        return getattr(launcher, name, None) or getattr(run_setup, name)
    raise AttributeError(f"module 'launch' has no attribute {name!r}")
