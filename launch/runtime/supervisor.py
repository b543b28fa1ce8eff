"""Keeps one node running: starts its process, and starts it again when it dies.

Every `launch.runtime.entry` process (local_mp, hosts, slurm) is a small supervisor; the node
runs in a child process that it starts with the same arguments. A child that dies while
the program runs (a signal, an exception, an OOM kill) is started again, within its
`RestartPolicy` (so many restarts per window of time), with its attempt number: a
restarted actor draws a fresh environment seed, a restarted learner loads its newest
checkpoint, a restarted replay server refills from the run's recorded experience. The
node keeps its address (the supervisor holds its port), so the nodes that call it
reconnect on their own. A supervisor that is lost itself (its host) is started again by
the launcher, at the same port, and its first child is a restart (`first_attempt`).

A child that ends with 0 (the program stopped), with a `RunError` (no restart mends
it), or while the program is stopping is not restarted. Past its budget the
supervisor asks the counter to stop the run, naming the node and its log.
"""

import ctypes
import dataclasses
import os
import signal
import subprocess
import threading
import time
from typing import Callable, Optional

from launch.faults import RUN_ERROR_EXIT_CODE, SUPERSEDED_EXIT_CODE

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


def _duration(seconds: float) -> str:
    """"60 minutes", "90 s": a restart window as messages say it."""
    return f"{seconds / 60:g} minutes" if seconds >= 60 else f"{seconds:g} s"


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    """At most `max_restarts` restarts of a node in any `window_s` seconds (inf: over the whole
    run). A node that dies now and then is started again however long the run; one that dies
    in a fast loop uses up the budget inside one window and stops the run."""

    max_restarts: int = 0
    window_s: float = float("inf")

    def __post_init__(self):
        if self.max_restarts < 0 or not self.window_s > 0:
            raise ValueError(f"A restart policy needs max_restarts >= 0 and window_s > 0, got {self}.")

    def to_json(self) -> dict:
        return {"max_restarts_per_node": self.max_restarts,
                "restart_window_s": None if self.window_s == float("inf") else self.window_s}

    @classmethod
    def of_experiment(cls, config) -> "RestartPolicy":
        """The run's: `experiment.max_restarts_per_node` per `restart_window_minutes`."""
        return cls(config.max_restarts_per_node, config.restart_window_minutes * 60.0)

    @classmethod
    def from_json(cls, settings: dict) -> "RestartPolicy":
        window_s = settings.get("restart_window_s")
        return cls(settings.get("max_restarts_per_node", 0), float("inf") if window_s is None else window_s)

    def describe(self) -> str:
        """"3 restarts per 60 minutes", or "3 restarts" over the whole run."""
        restarts = f"{self.max_restarts} restart{'s' if self.max_restarts != 1 else ''}"
        return restarts if self.window_s == float("inf") else f"{restarts} per {_duration(self.window_s)}"


class RestartBudget:
    """What is left of a node's `RestartPolicy` as its deaths come."""

    def __init__(self, policy: RestartPolicy):
        self.policy = policy
        self._restarts = []  # their times, the last window's only

    def used(self, now: float) -> int:
        """Restarts inside the window that ends at `now`."""
        self._restarts = [time_ for time_ in self._restarts if now - time_ < self.policy.window_s]
        return len(self._restarts)

    def allows(self, now: float) -> bool:
        """Whether a node that died at `now` may be started again."""
        return self.used(now) < self.policy.max_restarts

    def spend(self, now: float) -> None:
        self._restarts.append(now)

    def within(self) -> str:
        """" within 60 minutes", or nothing for a budget over the whole run."""
        return "" if self.policy.window_s == float("inf") else f" within {_duration(self.policy.window_s)}"


class Supervisor:
    """Runs `argv + ["--attempt=K"]` until it ends for good; `run()` returns its exit code.

    node: "label/index", for messages. log: where the node's output goes (for messages).
    stopping(): whether the program is stopping (asked of the counter); a child that dies
        then stays down.
    report(record): a restart or the end of the budget, for the counter's record; called
        from a thread (the counter may be the node that is restarting).
    first_attempt: the first child's attempt number; above 0 for a supervisor that replaces a
        lost one (its child is then a restart: fresh seeds, a checkpoint, a refill).
    next_attempt(attempt): the number for a restart, given one past the last child's: at least
        that, more where a newer process of the node runs elsewhere (the counter knows).
    """

    def __init__(self, argv: list, node: str, restarts: RestartPolicy, stopping: Callable[[], bool],
                 report: Callable[[dict], None], log: Optional[str] = None, first_attempt: int = 0,
                 next_attempt: Callable[[int], int] = lambda attempt: attempt):
        self._argv = argv
        self._first_attempt = first_attempt
        self._next_attempt = next_attempt
        self._node = node
        self._budget = RestartBudget(restarts)
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
        attempt = self._first_attempt
        while True:
            started = time.time()
            self._child = self._start(attempt)
            if self._signalled.is_set():  # a signal that came while the child was being started
                self._child.send_signal(signal.SIGTERM)
            code = self._child.wait()
            if code == SUPERSEDED_EXIT_CODE:
                print(f"relay supervisor: node {self._node} was replaced by a newer process elsewhere; "
                      "not started again", flush=True)
                return code
            if code in (0, RUN_ERROR_EXIT_CODE) or self._signalled.is_set() or self._stopping():
                return code
            cause = describe_exit(code)
            now = time.time()
            record = {"node": self._node, "cause": cause, "exit_code": code, "attempt": attempt,
                      "ran_s": round(now - started, 3), "time": now, "log": self._log}
            if not self._budget.allows(now):
                record["restarted"] = False
                message = (f"node {self._node} died {self._budget.used(now) + 1} times{self._budget.within()} "
                           f"(last: {cause}), past its budget of {self._budget.policy.describe()}; "
                           f"its log: {self._log or 'this output'}")
                print(f"relay supervisor: {message}; stopping the run", flush=True)
                self._report(dict(record, message=message))
                return code
            self._budget.spend(now)
            attempt = self._next_attempt(attempt + 1)
            record["restarted"] = True
            print(f"relay supervisor: node {self._node} died ({cause}) after {record['ran_s']:.1f} s; "
                  f"restart {attempt} ({self._budget.used(now)} of {self._budget.policy.describe()})", flush=True)
            threading.Thread(target=self._report, args=(record,), daemon=True, name="report-restart").start()
            if self._signalled.wait(_RESTART_DELAY_S) or self._stopping():
                return code
