"""What every launch type shares: where logs and launch files go, which nodes may open an
accelerator, and local_mt (the program as threads of one process, through Launchpad).

Every other launch type starts each node as its own process with `launch.entry`:
local_mp and hosts through `launch.hosts`, slurm through `launch.slurm`.
"""

import faulthandler
import os
import sys
import threading

import launchpad as lp
from absl import flags

# Launchpad kills a local_mt process whose threads have not all returned this long after the
# stop (its default, 10 s, was once passed on a loaded 2-core machine: the run ended -9).
_THREADS_STOP_S = 30

# Actors, the evaluator, the monitor, replay and the counter never touch an accelerator:
# N actors must not open N GPU contexts. TensorFlow (CPU build) never sees a GPU either way.
# launch.entry sets this in every node process but the learner's.
CPU_ONLY_ENV = {"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
# Set by launch.entry in a node process: how many times its supervisor has restarted the node.
ATTEMPT_ENV = "RELAY_NODE_ATTEMPT"


def node_attempt() -> int:
    """0 in a node's first process (and in every local_mt thread); k in its k-th restart."""
    return int(os.environ.get(ATTEMPT_ENV, "0"))


def logs_dir(run_dir: str, launch_index: int = 0) -> str:
    """Where the nodes' output goes: RUN_DIR/logs, and RUN_DIR/logs/launch_<k> for the k-th
    resume (an earlier launch's logs are kept)."""
    base = os.path.join(os.path.abspath(run_dir), "logs")
    return base if launch_index == 0 else os.path.join(base, f"launch_{launch_index}")


def launch_dir(run_dir: str, launch_index: int = 0) -> str:
    """What a launch hands its node processes (the pickled program, the cluster spec, the
    counter's address), and a SLURM launch's job script: RUN_DIR/launches/<k>."""
    return os.path.join(os.path.abspath(run_dir), "launches", str(launch_index))


def counter_address(program: lp.Program) -> str:
    """The counter node's host:port once the program is launched in this process (local_mt)."""
    return program.groups["counter"][0].courier_address.resolve()


def launch_threads(program: lp.Program):
    """Starts `program` as threads of this process (local_mt); returns Launchpad's worker
    manager (call .wait() on it).

    A thread still running 3 s before Launchpad kills the process shows where it is: every
    thread's stack goes to stderr (a stop that hangs is a bug to find, not to wait out)."""
    if not flags.FLAGS["lp_termination_notice_secs"].present:
        flags.FLAGS.lp_termination_notice_secs = _THREADS_STOP_S
    manager = lp.launch(program, launch_type="local_mt", serialize_py_nodes=False)

    def dump_stacks_before_the_kill():
        manager.stop_event().wait()
        faulthandler.dump_traceback_later(max(1, flags.FLAGS.lp_termination_notice_secs - 3), file=sys.stderr)

    threading.Thread(target=dump_stacks_before_the_kill, daemon=True, name="stop-stacks").start()
    return manager
