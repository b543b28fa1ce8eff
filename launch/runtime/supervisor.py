"""Keeps one node running: starts its process, and starts it again when it dies.

Every `launch.runtime.entry` process (local_mp, hosts, slurm) is a small supervisor; the node
runs in a child process that it starts with the same arguments. A child that dies
while the program runs (a signal, an exception, an OOM kill) is started again, up to
`max_restarts` times, with its attempt number: a restarted actor draws a fresh
environment seed, a restarted learner loads its newest checkpoint, a restarted replay
server refills from the run's recorded experience. The node keeps its address (the
supervisor holds its port), so the nodes that call it reconnect on their own.

A child that ends with 0 (the program stopped), with a `RunError` (no restart mends
it), or while the program is stopping is not restarted. Past its budget the
supervisor asks the counter to stop the run, naming the node and its log.
"""

import ctypes
import os
import signal
import subprocess
import threading
import time
from typing import Callable, Optional

from launch.faults import RUN_ERROR_EXIT_CODE

# A dead node is started again after this pause: one that dies at once does not spin.
_RESTART_DELAY_S = 1.0
_PR_SET_PDEATHSIG = 1
SUPERVISOR_PID_ENV = "RELAY_SUPERVISOR_PID"


def describe_exit(code: int) -> str:
    """"signal 9 (SIGKILL)" or "exit code 1"; a supervisor whose node died of signal N exits
    with 128 + N, as a shell reports it."""
    number = -code if code < 0 else code - 128 if code > 128 else None
    if number is None:
        return f"exit code {code}"
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"


def exit_code(code: int) -> int:
    """The supervisor's own exit code for its node's: 128 + N for a death by signal N."""
    return 128 - code if code < 0 else code


def die_with_supervisor() -> None:
    """First thing in a node's process: the kernel kills it when its supervisor dies (a
    SIGKILLed supervisor cannot stop it). Done in the child itself, not between fork and
    exec, where the supervisor's gRPC threads could leave a lock held; a supervisor that
    died before this exits the child at once."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(os.environ.get(SUPERVISOR_PID_ENV, os.getppid())):
        os._exit(1)


class Supervisor:
    """Runs `argv + ["--attempt=K"]` until it ends for good; `run()` returns its exit code.

    node: "label/index", for messages. log: where the node's output goes (for messages).
    stopping(): whether the program is stopping (asked of the counter); a child that dies
        then stays down.
    report(record): a restart or the end of the budget, for the counter's record; called
        from a thread (the counter may be the node that is restarting).
    """

    def __init__(self, argv: list, node: str, max_restarts: int, stopping: Callable[[], bool],
                 report: Callable[[dict], None], log: Optional[str] = None):
        self._argv = argv
        self._node = node
        self._max_restarts = max_restarts
        self._stopping = stopping
        self._report = report
        self._log = log
        self._signalled = threading.Event()
        self._child: Optional[subprocess.Popen] = None

    def _forward(self, signum, frame) -> None:
        if signum != signal.SIGUSR2:  # SIGUSR2 asks the node for its stacks; the rest stop it
            self._signalled.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    def _start(self, attempt: int) -> subprocess.Popen:
        # Its own session: a terminal's Ctrl-C and a group's SIGTERM reach the supervisor,
        # which hands each on once.
        return subprocess.Popen(self._argv + [f"--attempt={attempt}"], start_new_session=True,
                                env={**os.environ, SUPERVISOR_PID_ENV: str(os.getpid())})

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
            signal.signal(signum, self._forward)
        attempt = 0
        while True:
            started = time.time()
            self._child = self._start(attempt)
            if self._signalled.is_set():  # a signal that came while the child was being started
                self._child.send_signal(signal.SIGTERM)
            code = self._child.wait()
            if code in (0, RUN_ERROR_EXIT_CODE) or self._signalled.is_set() or self._stopping():
                return code
            cause = describe_exit(code)
            record = {"node": self._node, "cause": cause, "exit_code": code, "attempt": attempt,
                      "ran_s": round(time.time() - started, 3), "time": time.time(), "log": self._log}
            if attempt >= self._max_restarts:
                record["restarted"] = False
                message = (f"node {self._node} died {attempt + 1} times (last: {cause}), past its budget of "
                           f"{self._max_restarts} restarts; its log: {self._log or 'this output'}")
                print(f"relay supervisor: {message}; stopping the run", flush=True)
                self._report(dict(record, message=message))
                return code
            attempt += 1
            record["restarted"] = True
            print(f"relay supervisor: node {self._node} died ({cause}) after {record['ran_s']:.1f} s; "
                  f"restart {attempt} of {self._max_restarts}", flush=True)
            threading.Thread(target=self._report, args=(record,), daemon=True, name="report-restart").start()
            if self._signalled.wait(_RESTART_DELAY_S) or self._stopping():
                return code
