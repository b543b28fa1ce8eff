"""The counter node: the program's one source of truth, over RPC.

It holds the totals (env steps, episodes, learner steps), the progress a launcher
shows, the stop request, and, when nodes run on several hosts, their addresses.
Nodes report to it and ask it; none reads another node's files. At the stop it waits
for the nodes that report final totals (actors, learner, evaluator), then writes its
own outputs: counts.json and summary.json.
"""

import json
import os
import threading
import time
import uuid
from typing import Dict, Iterable, List, Optional

import launchpad as lp

from launch.config import ExperimentConfig
from launch.faults import SUPERSEDED
from launch.nodes.process import node_attempt
from launch.rundir import summary
from launch.rundir.jsonio import read_json, write_json
from launch.rundir.paths import COUNTER_STATE_FILE, RunPaths

# At a stop the counter waits this long at most for the finishing nodes' last reports;
# Launchpad kills a node 10 s after its stop notice, and the summary must be written first.
FINISH_WAIT_S = 6.0
# The totals are saved this often while the run goes (a killed run keeps recent totals).
_SAVE_EVERY_S = 5.0
# The counter's state, which a restarted counter goes on from, is saved this often: a
# restart loses at most this long of the reports of nodes that died in between.
_SAVE_STATE_EVERY_S = 0.5


class CounterNode:
    """Totals, progress, addresses and the stop; `run()` ends by writing counts.json and summary.json.

    finishing_nodes: names of the nodes that call `node_finished(name)` after their last
        report (e.g. "actor_0", "learner", "evaluator"); the summary waits for them.
    """

    def __init__(self, config: ExperimentConfig, finishing_nodes: Iterable[str] = ()):
        self._config = config
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()  # one writer of the state file at a time
        self._counts_before: Dict[str, float] = dict(config.resume.counts) if config.resume is not None else {}
        # Each sender's totals since it started (a node process's actor steps), and the values
        # a node sets outright (the learner's step): the counter's totals are built from them,
        # so a sender that reports again after a lost call or a counter restart counts once.
        self._by_sender: Dict[str, Dict[str, float]] = {}
        self._values: Dict[str, float] = {}
        self._progress: dict = {}
        self._addresses: Dict[str, str] = {}
        self._attempts: Dict[str, int] = {}  # node -> the highest attempt that registered
        self._restarts: List[dict] = []
        self._stop_reason: Optional[str] = None
        self._expected = frozenset(finishing_nodes)
        self._finished = set()
        self._all_finished = threading.Event()
        self._watchers, self._told_to_stop = set(), set()
        self._heard: Dict[str, float] = {}  # watcher -> when it last asked for the stop reason
        self._all_told = threading.Event()
        self._start = time.time()  # the launch's (a restarted counter reads it from its state)
        self._process_start = time.time()
        self._state_path = os.path.join(RunPaths(config.run_dir).launch_dir(config.launch_index), COUNTER_STATE_FILE)
        os.makedirs(os.path.dirname(self._state_path), exist_ok=True)
        if node_attempt() > 0:
            self._load_state()

    def _load_state(self) -> None:
        """A restarted counter goes on from what it last saved; the nodes' next reports bring it
        up to date (each sends its totals whole)."""
        state = read_json(self._state_path)
        if state is None:
            print(f"counter: restarted without saved state ({self._state_path} is missing)", flush=True)
            return
        self._by_sender, self._values = state["by_sender"], state["values"]
        self._addresses, self._restarts = state["addresses"], state["restarts"]
        self._attempts = state.get("attempts", {})
        self._stop_reason, self._start = state["stop_reason"], state["started_at"]
        print(f"counter: restarted from {self._state_path}: env steps {self.get_counts().get('actor_steps', 0):,.0f}",
              flush=True)

    def _save_state(self) -> None:
        with self._lock:  # a copy: the file is written without holding up the nodes' calls
            state = json.loads(json.dumps({
                "by_sender": self._by_sender, "values": self._values, "addresses": self._addresses,
                "attempts": self._attempts, "restarts": self._restarts, "stop_reason": self._stop_reason, "started_at": self._start}))
        with self._save_lock:
            write_json(self._state_path, state)

    def report_counts(self, sender: str, totals: Dict[str, float], values: Optional[Dict[str, float]] = None) -> None:
        """`sender`'s totals since it started (each count only grows: a late or repeated report
        changes nothing), and `values` set outright (the learner's step: the newest report wins)."""
        with self._lock:
            held = self._by_sender.setdefault(sender, {})
            for key, value in totals.items():
                held[key] = max(held.get(key, 0), value)
            self._values.update(values or {})

    def get_counts(self) -> Dict[str, float]:
        with self._lock:
            counts = dict(self._counts_before)
            for totals in self._by_sender.values():
                for key, value in totals.items():
                    counts[key] = counts.get(key, 0) + value
            counts.update(self._values)
            return counts

    def record_restart(self, record: dict) -> None:
        """A node's supervisor restarted it, or gave up on it (`launch.runtime.supervisor`): kept in the
        counter's state and in RUN_DIR/restarts.jsonl, and shown by the launcher."""
        with self._lock:
            if record in self._restarts:  # a retried call the counter had taken
                return
            self._restarts.append(dict(record))
            with open(RunPaths(self._config.run_dir).restarts, "a") as file:
                file.write(json.dumps(record) + "\n")
        self._save_state()

    def get_restarts(self) -> List[dict]:
        with self._lock:
            return list(self._restarts)

    def report_progress(self, progress: dict) -> None:
        """The monitor's latest progress figures (rates, table sizes)."""
        with self._lock:
            self._progress = dict(progress)

    def get_progress(self) -> dict:
        """What a launcher's progress line shows: the monitor's figures with the current totals."""
        counts = self.get_counts()
        with self._lock:
            progress = dict(self._progress)
            progress["restarts"] = list(self._restarts)
        progress.update(env_steps=int(counts.get("actor_steps", 0)), learner_steps=int(counts.get("learner_steps", 0)),
                        episodes=int(counts.get("actor_episodes", 0)), max_env_steps=self._config.max_env_steps,
                        elapsed_s=time.time() - self._start, stop_reason=self._stop_reason,
                        run_dir=self._config.run_dir)  # whose counter this is, for whoever finds its address
        progress.setdefault("env_steps_per_s", 0.0)
        progress.setdefault("learner_steps_per_s", 0.0)
        progress.setdefault("replay_size", -1)
        return progress

    def register_address(self, node: str, address: str, attempt: int = 0) -> None:
        """Node `node` ("label/index"), its process `attempt`, serves at `address` (host:port).
        Multi-node launches only."""
        with self._lock:
            self._addresses[node] = address
            self._attempts[node] = max(attempt, self._attempts.get(node, -1))

    def next_attempt(self, node: str) -> int:
        """The attempt number for `node`'s next process: one past every one that registered. A
        supervisor started again after its own loss (its host's) goes on from it."""
        with self._lock:
            return self._attempts.get(node, -1) + 1

    def lookup_address(self, node: str) -> Optional[str]:
        """The address node `node` registered, or None while it has not."""
        with self._lock:
            return self._addresses.get(node)

    def request_stop(self, reason: str) -> None:
        """Asks every node to stop (multi-node launches poll `stop_reason`); the first reason stays."""
        with self._lock:
            if self._stop_reason is not None:
                return
            self._stop_reason = reason
            if not self._watchers:
                self._all_told.set()
        self._save_state()  # a counter restarted from here on knows the program is stopping

    def stop_reason(self, watcher: Optional[str] = None, attempt: Optional[int] = None) -> Optional[str]:
        """Why the program stops, or None while it runs. `watcher`: the node process asking
        (multi-node launches poll this); the counter outlives the stop until each has heard it.

        `attempt`: the watcher's process attempt. An older process than the newest that
        registered for its node (a host cut off for longer than the job waits, whose node was
        started again elsewhere, then back) is told "superseded: ..." instead, and is not
        heard: its polls must not hide the new process's silence."""
        with self._lock:
            newest = self._attempts.get(watcher, -1) if watcher is not None else -1
            if attempt is not None and attempt < newest:
                return f"{SUPERSEDED}: {watcher} runs as a newer process (attempt {newest}; this is attempt {attempt})"
            if watcher is not None:
                self._watchers.add(watcher)
                self._heard[watcher] = time.time()
                if self._stop_reason is not None:
                    self._told_to_stop.add(watcher)
                    if self._watchers <= self._told_to_stop:
                        self._all_told.set()
            return self._stop_reason

    def silent_for(self, nodes: List[str]) -> Dict[str, float]:
        """Seconds since each of `nodes` last asked for the stop reason (every node process does,
        every 0.2 s); for one not heard from yet, since this counter process started (a
        restarted counter has heard from nobody). A launch whose nodes all fell silent has
        lost them, whatever its own process says (`launch.runtime.slurm`)."""
        now = time.time()
        with self._lock:
            return {node: now - self._heard.get(node, self._process_start) for node in nodes}

    def node_finished(self, node: str) -> None:
        """`node` has made its last report."""
        with self._lock:
            self._finished.add(node)
            if self._expected <= self._finished:
                self._all_finished.set()

    def run(self):
        stop = lp.stop_event()
        saved = time.time()
        while not stop.wait(_SAVE_STATE_EVERY_S):
            self._save_state()
            if time.time() - saved >= _SAVE_EVERY_S:
                self._save_counts()
                saved = time.time()
        self.request_stop("the counter was stopped")  # a stop by signal: watchers hear it from here
        deadline = time.time() + FINISH_WAIT_S
        self._all_finished.wait(FINISH_WAIT_S)
        with self._lock:
            missing = sorted(self._expected - self._finished)
        if missing:
            print(f"counter: no final report from {', '.join(missing)} within {FINISH_WAIT_S:.0f} s; "
                  "the summary has their counts up to their last report", flush=True)
        self._save_counts()
        self._save_state()
        summary.write_summary(self._config, self.get_counts(), self._counts_before, time.time() - self._start,
                              restarts=self.get_restarts(), stop_reason=self._stop_reason)
        # Every polling node hears the stop before the counter goes (one that polled after the
        # counter had gone would wait for it to come back).
        self._all_told.wait(max(0.0, deadline - time.time()))

    def _save_counts(self) -> None:
        write_json(RunPaths(self._config.run_dir).counts, self.get_counts())


class CountBuffer:
    """A node's counts for the counter, prefixed as acme's child counters do ("actor_steps").

    `increment` adds to the node's totals and `set` sets a value outright (the learner's
    step); both are sent whole at most every `every_s` seconds. A call that fails (the
    counter is busy, restarting, or the program is stopping) changes nothing: the next one
    sends the totals again, and the counter counts each sender's totals once.
    `flush(client)` sends them now, through another client if given (at a stop,
    `rpc.final_client`).
    """

    def __init__(self, client, prefix: str, every_s: float = 0.5, node: Optional[str] = None):
        self._client = client
        self._prefix = prefix
        self._every_s = every_s
        # One sender per node process: a restarted node's totals start again under a new name.
        self._sender = f"{node or prefix}-{uuid.uuid4().hex[:12]}"
        self._totals: Dict[str, float] = {}
        self._values: Dict[str, float] = {}
        self._sent_at = time.time()

    def increment(self, **counts) -> None:
        for key, value in counts.items():
            key = f"{self._prefix}_{key}"
            self._totals[key] = self._totals.get(key, 0) + value
        self._maybe_flush()

    def set(self, **values) -> None:
        self._values.update({f"{self._prefix}_{key}": value for key, value in values.items()})
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if time.time() - self._sent_at >= self._every_s:
            try:
                self.flush()
            except Exception:  # kept; the next send or the final flush takes it
                pass

    def send(self) -> bool:
        """Sends the totals now; False if the counter did not take them (the next send carries them)."""
        try:
            self.flush()
        except Exception:  # busy, restarting or stopping, as in `_maybe_flush`
            return False
        return True

    def flush(self, client=None) -> None:
        """Sends the totals; raises if the call fails (nothing is lost)."""
        self._sent_at = time.time()
        (client or self._client).report_counts(self._sender, dict(self._totals), dict(self._values))


def saved_stop_reason(launch_dir: str) -> Optional[str]:
    """The stop reason in the counter's saved state (its supervisor reads it: a counter that
    dies once the program is stopping is not started again)."""
    state = read_json(os.path.join(launch_dir, COUNTER_STATE_FILE))
    return None if state is None else state.get("stop_reason")


def finish(client, node: str, counts: Optional[CountBuffer] = None) -> None:
    """At a node's stop: its last counts and that it has finished, if the counter still answers.
    `client`: `rpc.final_client(counter)`."""
    try:
        if counts is not None:
            counts.flush(client)
        client.node_finished(node)
    except Exception as error:  # the counter is gone: the summary keeps what it had
        print(f"{node}: the counter did not take the final report ({type(error).__name__})", flush=True)
