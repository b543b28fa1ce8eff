"""What the SLURM job driver (`launch.runtime.slurm`) watches besides its steps' exits: a
step whose srun still runs though its nodes are gone (`Step`), and the job's time limit
(`TimeLimitWatch`)."""

import signal
import subprocess
import threading
import time
from typing import Callable, List, Optional

LOST_STEP_CODE = -int(signal.SIGKILL)  # what a lost step (`Step`) ended with
TIME_LIMIT_REASON = "the SLURM job's time limit is near"


class Step:
    """An `srun` step as `launch.runtime.watch` sees a process: `poll()` is srun's exit code once
    it has ended, or LOST_STEP_CODE once the counter has heard from none of the step's nodes for
    `lost_after_s` (srun is then ended: it may wait on a host that is gone). A node not heard
    from since the step started gets `startup_s` more to start (imports, the first connection).

    Some of its nodes silent that long (one host of several lost) are offered to
    `move_nodes(nodes)`, which starts them elsewhere (True) and the step goes on with the rest;
    refused, the step is lost whole and `refused` says so (its other nodes still run: it must not
    be started again whole). srun's exit code then speaks for the moved nodes' tasks too, and it
    may wait for the lost host to the end: such a step ends with 0 once `program_ended()` (the
    counter has written the summary: every node of the step made its last report before that),
    `end_grace_s` later, or when srun ends while `program_stopping()`."""

    def __init__(self, srun: subprocess.Popen, nodes: List[str], silent_for: Callable[[List[str]], Optional[dict]],
                 lost_after_s: float, startup_s: float = 120.0, check_every_s: float = 2.0,
                 move_nodes: Optional[Callable[[List[str]], bool]] = None,
                 program_ended: Callable[[], bool] = lambda: False,
                 program_stopping: Callable[[], bool] = lambda: False, end_grace_s: float = 10.0):
        self.srun = srun
        self.nodes = list(nodes)  # the nodes it runs, less those moved
        self.moved: List[str] = []
        self._silent_for = silent_for
        self._lost_after_s = lost_after_s
        self._startup_s = startup_s
        self._check_every_s = check_every_s
        self._move_nodes = move_nodes
        self._program_ended = program_ended
        self._program_stopping = program_stopping
        self._end_grace_s = end_grace_s
        self._ended_seen_at: Optional[float] = None
        self._started_at = self._checked_at = time.time()
        self._ended: Optional[int] = None
        self.lost_after_s: Optional[float] = None  # set once the step is found lost
        self.refused = False

    def _end(self, code: int) -> int:
        """Ends srun and the tasks it still reaches: two SIGINTs within a second make srun kill
        them (a SIGKILL of srun alone would leave them running); SIGKILL once it is no use."""
        for sig in (signal.SIGINT, signal.SIGINT):
            if self.srun.poll() is None:
                self.srun.send_signal(sig)
                time.sleep(0.1)
        try:
            self.srun.wait(timeout=5.0)
        except subprocess.TimeoutExpired:  # it waits on a host that is gone
            self.srun.kill()
            self.srun.wait()
        self._ended = code
        return code

    def wait(self) -> int:
        self.srun.wait()
        return self.poll()

    def poll(self) -> Optional[int]:
        if self._ended is not None:
            return self._ended
        code = self.srun.poll()
        if code is not None:
            if self.moved and code != 0 and self._program_stopping():  # its moved nodes' tasks' code
                self._ended = 0
                return 0
            return LOST_STEP_CODE if self.lost_after_s else code
        if self.moved and self._program_ended():
            self._ended_seen_at = self._ended_seen_at or time.time()
            if time.time() - self._ended_seen_at >= self._end_grace_s:  # its nodes' last writes first
                print(f"relay job: the program has ended; the step of {', '.join(self.nodes)} is done (its srun "
                      f"waited on for {', '.join(self.moved)}, moved)", flush=True)
                return self._end(0)
        if time.time() - self._checked_at >= self._check_every_s:
            self._checked_at = time.time()
            silent = self._silent_for(self.nodes) or {}
            running_s = self._checked_at - self._started_at

            def silent_s(node: str) -> float:
                heard_s = silent.get(node)  # None: never heard (or the counter did not answer)
                return heard_s if heard_s is not None and heard_s < running_s else running_s - self._startup_s

            lost = [node for node in self.nodes if silent and silent_s(node) > self._lost_after_s]
            if lost and len(lost) < len(self.nodes) and self._move_nodes is not None:
                if self._move_nodes(lost):
                    self.nodes = [node for node in self.nodes if node not in lost]
                    self.moved += lost
                    return None
                self.refused = True
            if lost and (len(lost) == len(self.nodes) or self.refused):
                print(f"relay job: nothing heard from {', '.join(lost)} for {self._lost_after_s:.0f} s: "
                      "their step is lost", flush=True)
                self.lost_after_s = self._lost_after_s
                return self._end(LOST_STEP_CODE)
        return None

    def send_signal(self, sig: int) -> None:
        self.srun.send_signal(sig)

    def kill(self) -> None:
        self.srun.kill()


def time_left_s(job_id: str) -> Optional[float]:
    """Seconds until the job's time limit, from squeue ([days-][hours:]minutes:seconds); None
    without a limit, or when squeue does not say."""
    try:
        result = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_time_left(result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip()
                           else "")


def parse_time_left(text: str) -> Optional[float]:
    """Seconds in squeue's "%L" ("1-02:03:04", "2:03:04", "3:04"); None for UNLIMITED and the like."""
    days, _, clock = text.strip().rpartition("-")
    parts = clock.split(":")
    if not all(part.isdigit() for part in parts) or not (days == "" or days.isdigit()) or len(parts) > 3:
        return None  # UNLIMITED, NOT_SET, INVALID
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return seconds + 86400 * int(days or 0)


class TimeLimitWatch:
    """Asks for the program's stop (`stop_soon(reason)`) `stop_before_s` before the job's time
    limit, read from squeue every `check_every_s` (an administrator may change it) and whenever
    SLURM warns the job script (`--signal=B:USR1`, `warn`): SLURM may send that warning up to a
    minute early, so it only has the limit read again; without an answer from squeue, the
    warning itself stops the program."""

    def __init__(self, time_left: Callable[[], Optional[float]], stop_before_s: float,
                 stop_soon: Callable[[str], None], check_every_s: float = 30.0):
        self._time_left = time_left  # seconds, None when unknown (e.g. `lambda: time_left_s(job_id)`)
        self._stop_before_s = stop_before_s
        self._stop_soon = stop_soon
        self._check_every_s = check_every_s
        self._wake = threading.Event()
        self._warned = False
        self._done = False

    def warn(self, signum=None, frame=None) -> None:
        self._warned = True
        self._wake.set()

    def close(self) -> None:
        self._done = True
        self._wake.set()

    def run(self) -> None:
        while not self._done:
            left = self._time_left()
            if left is not None and left <= self._stop_before_s:
                return self._stop_soon(f"{TIME_LIMIT_REASON} ({left:.0f} s left)")
            if left is None and self._warned:
                return self._stop_soon(f"{TIME_LIMIT_REASON} (SIGUSR1 from SLURM)")
            self._wake.wait(self._check_every_s if left is None
                            else min(self._check_every_s, max(0.5, left - self._stop_before_s)))
            self._wake.clear()
