"""A sweep's directory: its spec, its runs, and what its launchers leave there.

    SWEEP_DIR/
        sweep.json                        the spec (one it replaced: sweep.<UTC time>.json)
        <wave>/<task>/<label>/seed<k>/    each run, an ordinary run directory
        launcher_logs/<wave>/<task>/<label>/seed<k>.log
                                          experiments.train's output, every launch of the run
        launcher_logs/runner-<UTC time>.log   a detached runner's output
        runners.jsonl                     each runner of the sweep: pid, host, arguments, start, end
        stop.json                         a stop asked for (experiments.sweep stop); `run` clears it
        .claims/<wave>/<task>/<label>/seed<k>.lock
                                          held (flock) by a run's launcher while it goes
        report/                           experiments.sweep report: table and figures

A claim is an open file description with an exclusive flock: the runner takes it, hands it
to the launcher it starts, and the kernel lets it go when the launcher ends, however it ends.
"""

import dataclasses
import fcntl
import json
import os
import socket
import time
from typing import List, Optional

from experiments.sweep.spec import PlannedRun
from launch.rundir.jsonio import read_json, read_jsonl
from launch.rundir.paths import timestamp

SPEC_FILE = "sweep.json"


class NotASweep(ValueError):
    """A directory that a sweep command cannot use: the message says why and what to run."""


@dataclasses.dataclass(frozen=True)
class SweepDir:
    root: str

    def file(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def spec(self) -> str:
        return self.file(SPEC_FILE)

    @property
    def runners(self) -> str:
        return self.file("runners.jsonl")

    @property
    def stop_request(self) -> str:
        return self.file("stop.json")

    @property
    def report_dir(self) -> str:
        return self.file("report")

    def run_dir(self, run: PlannedRun) -> str:
        return run.run_dir(self.root)

    def launcher_log(self, run: PlannedRun) -> str:
        return self.file("launcher_logs", run.wave, run.name + ".log")

    def runner_log(self) -> str:
        return self.file("launcher_logs", f"runner-{timestamp()}.log")

    def claim_path(self, run: PlannedRun) -> str:
        return self.file(".claims", run.wave, run.name + ".lock")

    def runs(self) -> List[PlannedRun]:
        """The runs of the sweep's spec."""
        from experiments.sweep.spec import SpecError, expand

        spec = read_json(self.spec)
        if spec is None:
            raise NotASweep(f"{self.root} is not a sweep (no {SPEC_FILE}); start one with "
                            f"python -m experiments.sweep run SPEC.json --dir={self.root}")
        try:
            return expand(spec)
        except SpecError as error:
            raise NotASweep(f"{self.spec}: {error}") from None

    def stop_requested(self) -> Optional[dict]:
        return read_json(self.stop_request)

    def request_stop(self, reason: str) -> None:
        with open(self.stop_request, "w") as file:
            json.dump({"time": time.time(), "reason": reason, "host": socket.gethostname(), "pid": os.getpid()}, file)

    def clear_stop(self) -> None:
        try:
            os.remove(self.stop_request)
        except FileNotFoundError:
            pass

    def last_launch(self) -> Optional[dict]:
        """The launch flags of the sweep's last runner (runners.jsonl), if any."""
        starts = [record for record in read_jsonl(self.runners) if record.get("event") == "start" and "launch" in record]
        return starts[-1]["launch"] if starts else None

    def note_runner(self, event: str, **fields) -> None:
        with open(self.runners, "a") as file:
            file.write(json.dumps({"event": event, "time": time.time(), "host": socket.gethostname(),
                                   "pid": os.getpid(), **fields}) + "\n")


def open_sweep(root: str) -> SweepDir:
    """An existing sweep's directory; NotASweep, saying what it is instead, otherwise."""
    sweep = SweepDir(os.path.abspath(root))
    if not os.path.isdir(root):
        raise NotASweep(f"{root} is not a directory; a sweep starts with python -m experiments.sweep run SPEC.json "
                        f"--dir={root}")
    if not os.path.isfile(sweep.spec):
        what = "a run directory" if os.path.isfile(os.path.join(root, "config.json")) else "not a sweep"
        raise NotASweep(f"{root} is {what} (no {SPEC_FILE}); a sweep starts with python -m experiments.sweep run "
                        f"SPEC.json --dir=NEW_DIR")
    return sweep


def start_sweep(root: str, spec: dict) -> SweepDir:
    """The sweep `spec` in `root`: a new (or empty) directory gets the spec; an existing sweep keeps
    its runs, and takes `spec` only if every run it has started is planned the same (a larger
    step budget aside; the spec replaced is kept). Refuses anything else, writing nothing."""
    from experiments.sweep.spec import expand

    runs = expand(spec)
    sweep = SweepDir(os.path.abspath(root))
    if os.path.isdir(root) and os.listdir(root) and not os.path.isfile(sweep.spec):
        raise NotASweep(f"{root} holds files and is not a sweep (no {SPEC_FILE}); nothing there is touched. "
                        "Give a new or empty --dir.")
    if not os.path.isfile(sweep.spec):
        os.makedirs(root, exist_ok=True)
        _write_spec(sweep.spec, spec)
        return sweep
    if read_json(sweep.spec) == spec:
        return sweep
    planned = {(run.wave, run.name): run for run in runs}
    for run in sweep.runs():
        if not os.path.isdir(sweep.run_dir(run)) or not os.listdir(sweep.run_dir(run)):
            continue
        now = planned.get((run.wave, run.name))
        if now is not None and dataclasses.replace(now, max_env_steps=run.max_env_steps) != run:
            raise NotASweep(f"{root} is a sweep whose run {run.wave}/{run.name} has started with other settings "
                            f"than this spec gives it; nothing was changed. Run the sweep with its own spec "
                            f"(python -m experiments.sweep run {root}) or give a new --dir.")
    os.replace(sweep.spec, sweep.file(f"sweep.{timestamp()}.json"))
    _write_spec(sweep.spec, spec)
    return sweep


def _write_spec(path: str, spec: dict) -> None:
    with open(path, "x") as file:
        json.dump(spec, file, indent=2)
        file.write("\n")


def claim(path: str) -> Optional[int]:
    """A file descriptor holding the claim at `path`, or None if another process holds it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def claimed(path: str) -> bool:
    """Whether a launcher holds the claim at `path` now."""
    try:
        descriptor = os.open(path, os.O_RDONLY)  # status and report may read a sweep they cannot write
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
