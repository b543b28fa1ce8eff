"""The sweep runner: starts each run that is missing, as many at a time as it may, wave after
wave, until every run has reached its step budget.

Each run goes through `python -m experiments.train`, the command a run is started with by
hand: a new run with the spec's flags (and a later wave's `--rae_from`, the earlier runs it
replays), an unfinished one with `--resume`. A run starts once every run it replays has
finished. `SweepRunner.step()` does one round: it collects the launches that ended, then
starts what may start; `run()` repeats it. A stop (`experiments.sweep stop`, or Ctrl-C of
the runner) stops the runs cleanly through their launchers and starts nothing more.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

from experiments.sweep.spec import PlannedRun, sources
from experiments.sweep.state import FINISHED, GOING, NEW, UNFINISHED, RunStatus, run_status
from experiments.sweep.sweep_dir import SweepDir, claim
from launch.rundir.jsonio import read_json
from launch.rundir.paths import RunPaths

# The processes of one run with two actors that keep a core busy: the learner, the actors
# (the replay server, counter, evaluator and monitor take little).
_BUSY_PROCESSES_BESIDE_ACTORS = 2


def default_parallel(runs: Sequence[PlannedRun], launch_type: str) -> int:
    """Runs at once: on this machine as many as its cores keep busy (one on 2 cores); on hosts
    one (each run takes the cluster spec's hosts); under SLURM all (the scheduler queues them)."""
    if launch_type == "slurm":
        return len(runs)
    if launch_type == "hosts":
        return 1
    busy = max(run.num_actors for run in runs) + _BUSY_PROCESSES_BESIDE_ACTORS
    return max(1, len(os.sched_getaffinity(0)) // busy)


@dataclasses.dataclass(frozen=True)
class LaunchFlags:
    """How the runs are launched: experiments.train's launch flags."""

    launch_type: str = "local_mp"
    cluster: Optional[str] = None
    slurm: Sequence[str] = ()  # --slurm_* flags, passed on as given

    def as_record(self) -> dict:
        return {"launch_type": self.launch_type, "cluster": self.cluster and os.path.abspath(self.cluster),
                "slurm": list(self.slurm)}

    def train_flags(self) -> List[str]:
        flags = [f"--launch_type={self.launch_type}"]
        if self.cluster:
            flags.append(f"--cluster={os.path.abspath(self.cluster)}")
        if self.launch_type == "slurm":
            flags.append("--detach")  # the runner follows the job through SLURM, not through a launcher
        return flags + list(self.slurm)


@dataclasses.dataclass
class _Launch:
    run: PlannedRun
    process: subprocess.Popen
    log: str
    started: float
    resumed: bool


def chosen_sources(sweep: SweepDir, run: PlannedRun, runs: List[PlannedRun]) -> List[PlannedRun]:
    """The earlier runs `run` replays: every matching one, or the `best` by final evaluation return."""
    matching = sources(run, runs)
    if run.replay is None or run.replay.best is None:
        return matching

    def final_return(source: PlannedRun) -> float:
        value = (read_json(RunPaths(sweep.run_dir(source)).summary) or {}).get("final_eval_return")
        return float("-inf") if value is None else value

    return sorted(matching, key=final_return, reverse=True)[:run.replay.best]


def train_command(sweep: SweepDir, run: PlannedRun, runs: List[PlannedRun], status: RunStatus,
                  launch: LaunchFlags) -> List[str]:
    """The experiments.train command line that starts `run` (new) or continues it (unfinished)."""
    command = [sys.executable, "-m", "experiments.train"]
    run_dir = os.path.abspath(sweep.run_dir(run))
    if status.state == UNFINISHED:
        return command + [f"--resume={run_dir}", f"--max_env_steps={run.max_env_steps}"] + launch.train_flags()
    command += [f"--agent={run.agent}", f"--env={run.task}", f"--seed={run.seed}", f"--preset={run.preset}",
                f"--num_actors={run.num_actors}", f"--envs_per_actor={run.envs_per_actor}",
                f"--max_env_steps={run.max_env_steps}", f"--run_dir={run_dir}"]
    command += [f"--set={override}" for override in run.overrides]
    if run.replay is not None:
        command += run.replay.train_flags([os.path.abspath(sweep.run_dir(source))
                                           for source in chosen_sources(sweep, run, runs)])
    return command + launch.train_flags()


class SweepRunner:
    """Drives a sweep: `step()` once per round; `done` and `failed` say where it stands."""

    def __init__(self, sweep: SweepDir, runs: List[PlannedRun], parallel: int, launch: LaunchFlags = LaunchFlags(),
                 say: Callable[[str], None] = print, only: Optional[Sequence[PlannedRun]] = None):
        """`only`: the runs it may start (`--only`), default all; the rest are left as they are."""
        if parallel < 1:
            raise ValueError(f"--parallel must be at least 1, got {parallel}.")
        self.sweep, self.runs, self.parallel, self.launch, self._say = sweep, runs, parallel, launch, say
        self.selected = list(runs if only is None else only)
        self._launches: Dict[PlannedRun, _Launch] = {}
        self._followed: Dict[PlannedRun, _Launch] = {}  # submitted SLURM runs, followed through their jobs
        self.failed: Dict[PlannedRun, str] = {}  # runs this runner launched that ended short of their budget
        self._stopping = False
        self.done = False

    def _log(self, message: str) -> None:
        self._say(f"[{time.strftime('%H:%M:%S')}] {message}")

    def stop(self, reason: str) -> None:
        """Stops the runs this runner launched (SIGINT to each launcher: the run stops cleanly, as
        with Ctrl-C) and starts nothing more. Called again (a second Ctrl-C), each launcher gets
        a second SIGINT, with which it forces its nodes down. A SLURM launcher, which only submits
        a job, is left to finish: a job submitted is stopped through its counter (`sweep stop`)."""
        self._log(f"stopping ({reason}): the runs launched here stop cleanly, no more start"
                  if not self._stopping else f"{reason} again: the launchers force their nodes down")
        if self.launch.launch_type == "slurm":
            self._log(f"SLURM runs go on: python -m experiments.sweep stop {self.sweep.root} stops them")
        self._stopping = True
        for launch in self._launches.values():
            if launch.process.poll() is None and self.launch.launch_type != "slurm":
                launch.process.send_signal(signal.SIGINT)

    def _collect(self) -> None:
        for run, launch in list(self._launches.items()):
            code = launch.process.poll()
            if code is None:
                continue
            del self._launches[run]
            status = run_status(self.sweep, run, probe=self.launch.launch_type == "slurm")
            if status.state == GOING:  # a SLURM job it submitted: followed from here on
                self._followed[run] = launch
                continue
            self._ended(run, launch, status, code)

    def _follow_jobs(self) -> None:
        for run, launch in list(self._followed.items()):
            status = run_status(self.sweep, run)
            if status.state != GOING:
                del self._followed[run]
                self._ended(run, launch, status, 0)

    def _ended(self, run: PlannedRun, launch: _Launch, status: RunStatus, code: int) -> None:
        if status.state == FINISHED:
            final = status.final_return
            self._log(f"finished {run.wave}/{run.name}: {status.env_steps:,} env steps, final return "
                      f"{'n/a' if final is None else f'{final:.1f}'} ({time.time() - launch.started:,.0f} s)")
            return
        if self._stopping:
            self._log(f"stopped {run.wave}/{run.name} at {status.env_steps or 0:,} env steps")
            return
        why = f"exit {code}" if code else status.detail
        self.failed[run] = why
        self._log(f"FAILED {run.wave}/{run.name} ({why}); its launcher's output: {launch.log}")

    def _statuses(self) -> Dict[PlannedRun, RunStatus]:
        return {run: (RunStatus(GOING, "launched here") if run in self._launches else run_status(self.sweep, run))
                for run in self.runs}

    def step(self) -> Dict[PlannedRun, RunStatus]:
        """One round: collects ended launches, then starts the runs that may start. Sets `done`
        once nothing is going and nothing more can start. Returns each run's status."""
        if not self._stopping and self.sweep.stop_requested():  # first: the runs it stops are not failures
            self.stop(f"asked by {self.sweep.stop_request}")
        self._collect()
        self._follow_jobs()
        statuses = self._statuses()
        if self._stopping:
            self.done = not self._launches
            return statuses
        going = sum(status.state == GOING for status in statuses.values())
        for run in self.selected:
            if going >= self.parallel or self._stopping:  # a Ctrl-C may come during this round
                break
            if statuses[run].state not in (NEW, UNFINISHED) or run in self.failed:
                continue
            if any(statuses[source].state != FINISHED for source in sources(run, self.runs)):
                continue  # a later wave waits for the runs it replays
            if self._start(run, statuses[run]):
                statuses[run] = RunStatus(GOING, "launched here")
                going += 1
        # A run of the sweep going without this runner (by hand, another runner) counts against
        # --parallel above, but only those it may start are waited for.
        self.done = (not any(statuses[run].state == GOING for run in self.selected)
                     and not self._startable(statuses))
        return statuses

    def _startable(self, statuses: Dict[PlannedRun, RunStatus]) -> bool:
        return any(statuses[run].state in (NEW, UNFINISHED) and run not in self.failed
                   and all(statuses[source].state == FINISHED for source in sources(run, self.runs))
                   for run in self.selected)

    def _start(self, run: PlannedRun, status: RunStatus) -> bool:
        descriptor = claim(self.sweep.claim_path(run))
        if descriptor is None:
            return False  # another runner took it a moment ago
        try:
            command = train_command(self.sweep, run, self.runs, status, self.launch)
            log_path = self.sweep.launcher_log(run)
            os.makedirs(os.path.dirname(log_path), exist_ok=True)
            with open(log_path, "a") as log:
                log.write(f"$ python {' '.join(command[1:])}\n")
                log.flush()
                # Its own session: a Ctrl-C at the runner's terminal reaches the runner alone, which
                # stops each run through its launcher. The claim goes with the launcher.
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True, pass_fds=(descriptor,))
        finally:
            os.close(descriptor)
        resumed = status.state == UNFINISHED
        self._launches[run] = _Launch(run, process, log_path, time.time(), resumed)
        self._log(f"{'resume' if resumed else 'start'} {run.wave}/{run.name}"
                  + (f" from {status.env_steps or 0:,} env steps ({status.detail})" if resumed else "")
                  + f"  [pid {process.pid}, log {os.path.relpath(log_path)}]")
        return True

    def run(self, poll_s: float = 2.0, summary_every_s: float = 300.0) -> int:
        """Steps until done; 0 when every run has finished, 1 otherwise (which, and why, said)."""
        last_summary = time.time()
        statuses = self.step()
        self._log(count_states(statuses))  # what it found, the runs it just started among the going
        while not self.done:
            time.sleep(poll_s)
            statuses = self.step()
            if self.done or time.time() - last_summary >= summary_every_s:
                last_summary = time.time()
                self._log(count_states(statuses))
        unfinished = [run for run in self.selected if statuses[run].state != FINISHED]
        for run in unfinished:
            if run not in self.failed and not self._stopping:
                waiting_on = [s for s in sources(run, self.runs) if statuses[s].state != FINISHED]
                self._log(f"not started {run.wave}/{run.name}: "
                          + (f"waits for {', '.join(f'{s.wave}/{s.name}' for s in waiting_on)}" if waiting_on
                             else statuses[run].detail or statuses[run].state))
        return 0 if not unfinished else 1


def count_states(statuses: Dict[PlannedRun, RunStatus]) -> str:
    counts: Dict[str, int] = {}
    for status in statuses.values():
        counts[status.state] = counts.get(status.state, 0) + 1
    return ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
