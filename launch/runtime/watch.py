"""The one loop that watches a launch's processes and asks the program to stop.

Every process-per-node launch runs it: the launcher of local_mp and hosts over its node
processes, the SLURM launcher over its jobs, the SLURM job script over its `srun` steps.
A process that fails, unless `restart` starts it again, stops the program through the
counter (the other nodes stop as at the step limit: final checkpoint, flushed recordings,
summary); so does the first Ctrl-C or SIGTERM. Where the counter does not answer, or at a second Ctrl-C, or when the nodes
have not ended `force_after_s` after the stop was asked for, the processes are ended by
force.
"""

import signal
import sys
import threading
import time
from typing import Callable, Dict, Mapping, Optional

from launch.faults import SUPERSEDED_EXIT_CODE
from launch.runtime.supervisor import describe_exit


def failures(codes: Mapping[str, Optional[int]]) -> Dict[str, int]:
    """The processes of `codes` (name -> exit code, None while running) that failed. A node
    that a newer process of it replaced (elsewhere) ended for good; it did not fail."""
    return {name: code for name, code in codes.items() if code not in (None, 0, SUPERSEDED_EXIT_CODE)}


class LaunchWatch:
    """Watches `processes` until every one has ended; `run()` returns their exit codes. Used as
    a context manager around starting the processes and `run()`, it takes the named signals.

    processes: name -> anything with `poll()` (None while it runs, else its exit code), e.g. a
        subprocess.Popen; the name is used in messages ("node actor/1", "SLURM step actor").
    request_stop(reason) -> bool: asks the counter to stop the program; False if it did not answer.
    terminate(force): ends the processes that still run (force: at once, no grace).
    log_of(name): where a process's output is, for the message when it fails (or None).
    signals: what the first SIGINT / SIGTERM are called in the stop reason, e.g.
        {SIGINT: "Ctrl-C in the launcher"}; signals not named are not handled.
    restart(name, code) -> bool: offered each process that fails while the program runs; True
        if it started the process again (and put the new one in `processes`), which the
        program survives; False: it fails the program as without it.
    """

    def __init__(self, processes: Mapping[str, object], request_stop: Callable[[str], bool],
                 terminate: Callable[[bool], None], log_of: Callable[[str], Optional[str]] = lambda name: None,
                 signals: Optional[Mapping[int, str]] = None, force_after_s: float = 60.0, interval_s: float = 0.2,
                 restart: Optional[Callable[[str, int], bool]] = None):
        self._processes = processes  # the caller may add to it until `run`, and `restart` after
        self._restart = restart
        self._request_stop = request_stop
        self._terminate = terminate
        self._log_of = log_of
        self._signals = dict(signals or {})
        self._force_after_s = force_after_s
        self._interval_s = interval_s
        self._received = []  # signal numbers, in order
        self._stops_asked = []  # reasons, from stop_soon
        self.stop_reason: Optional[str] = None
        self._stop_asked_at: Optional[float] = None
        self._forced = False
        self._previous = {}

    def _on_signal(self, signum, frame) -> None:
        self._received.append(signum)

    def stop_soon(self, reason: str) -> None:
        """Asks, from any thread, for the program's stop (`run` acts on it at its next look); unlike a
        second signal, a second ask never ends the processes by force."""
        self._stops_asked.append(reason)

    def _ask_stop(self, reason: str, message: str) -> None:
        print(message, file=sys.stderr, flush=True)
        self.stop_reason, self._stop_asked_at = reason, time.time()
        if not self._request_stop(reason):
            self._terminate(False)  # the counter is gone: nobody else can stop them

    def _force(self) -> None:
        if not self._forced:
            self._forced = True
            self._terminate(True)

    def __enter__(self) -> "LaunchWatch":
        """From here on the named signals are taken (and acted on in `run`): one that comes
        while the processes are being started is not lost."""
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in self._signals:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def run(self) -> Dict[str, int]:
        while True:
            # list(): polling a step may add steps (one that moves some of its nodes elsewhere).
            codes = {name: process.poll() for name, process in list(self._processes.items())}
            if all(code is not None for code in codes.values()):
                return codes
            if self._received and self.stop_reason is None:
                self._ask_stop(self._signals[self._received[0]],
                               "\nStopping every node (Ctrl-C again to end them at once)...")
            if self._stops_asked and self.stop_reason is None:
                self._ask_stop(self._stops_asked[0], f"\n{self._stops_asked[0]}: stopping every node.")
            failed = failures(codes)
            if failed and self.stop_reason is None and self._restart is not None:
                failed = {name: code for name, code in failed.items() if not self._restart(name, code)}
            if failed and self.stop_reason is None:
                name, code = next(iter(failed.items()))
                log = self._log_of(name)
                self._ask_stop(f"{name} ended with {describe_exit(code)}",
                               f"\n{name} ended with {describe_exit(code)}" + (f" (log: {log})" if log else "")
                               + "; stopping the program.")
            if len(self._received) > 1 or (self._stop_asked_at is not None
                                           and time.time() - self._stop_asked_at > self._force_after_s):
                self._force()
            time.sleep(self._interval_s)
