"""local_mt: the program as threads of one process, through Launchpad."""

import faulthandler
import sys
import threading

import launchpad as lp
from absl import flags

from launch.nodes import launchpad_internals

# Launchpad kills a local_mt process whose threads have not all returned this long after the
# stop (its default, 10 s, was once passed on a loaded 2-core machine: the run ended -9).
_THREADS_STOP_S = 30


def counter_address(program: lp.Program) -> str:
    """The counter node's host:port once the program is launched in this process."""
    return launchpad_internals.courier_address(program.groups["counter"][0])


def launch_threads(program: lp.Program):
    """Starts `program` as threads of this process; returns Launchpad's worker manager
    (call .wait() on it).

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
