"""The counter node: the program's one source of truth, over RPC.

It holds the totals (env steps, episodes, learner steps), the progress a launcher
shows, the stop request, and, when nodes run on several hosts, their addresses.
Nodes report to it and ask it; none reads another node's files. At the stop it waits
for the nodes that report final totals (actors, learner, evaluator), then writes its
own outputs: counts.json and summary.json.
"""

import os
import threading
import time
import uuid
from typing import Dict, Iterable, Optional, Tuple

import launchpad as lp

from launch import summary
from launch.config import ExperimentConfig

# At a stop the counter waits this long at most for the finishing nodes' last reports;
# Launchpad kills a node 10 s after its stop notice, and the summary must be written first.
FINISH_WAIT_S = 6.0
# The totals are saved this often while the run goes (a killed run keeps recent totals).
_SAVE_EVERY_S = 5.0


class CounterNode:
    """Totals, progress, addresses and the stop; `run()` ends by writing counts.json and summary.json.

    finishing_nodes: names of the nodes that call `node_finished(name)` after their last
        report (e.g. "actor_0", "learner", "evaluator"); the summary waits for them.
    """

    def __init__(self, config: ExperimentConfig, finishing_nodes: Iterable[str] = ()):
        self._config = config
        self._lock = threading.Lock()
        self._counts: Dict[str, float] = dict(config.resume.counts) if config.resume is not None else {}
        self._counts_before = dict(self._counts)
        self._applied: Dict[str, int] = {}  # the last batch applied from each sender
        self._progress: dict = {}
        self._addresses: Dict[str, str] = {}
        self._stop_reason: Optional[str] = None
        self._expected = frozenset(finishing_nodes)
        self._finished = set()
        self._all_finished = threading.Event()
        self._watchers, self._told_to_stop = set(), set()
        self._all_told = threading.Event()
        self._start = time.time()

    def add_counts(self, sender: str, sequence: int, counts: Dict[str, float]) -> None:
        """Adds `counts` once: a batch whose `sequence` the sender already sent (a retried call
        the counter had already applied) is ignored, so nothing is counted twice."""
        with self._lock:
            if sequence <= self._applied.get(sender, 0):
                return
            self._applied[sender] = sequence
            for key, value in counts.items():
                self._counts[key] = self._counts.get(key, 0) + value

    def get_counts(self) -> Dict[str, float]:
        with self._lock:
            return dict(self._counts)

    def report_progress(self, progress: dict) -> None:
        """The monitor's latest progress figures (rates, table sizes)."""
        with self._lock:
            self._progress = dict(progress)

    def get_progress(self) -> dict:
        """What a launcher's progress line shows: the monitor's figures with the current totals."""
        with self._lock:
            counts, progress = dict(self._counts), dict(self._progress)
        progress.update(env_steps=int(counts.get("actor_steps", 0)), learner_steps=int(counts.get("learner_steps", 0)),
                        episodes=int(counts.get("actor_episodes", 0)), max_env_steps=self._config.max_env_steps,
                        elapsed_s=time.time() - self._start, stop_reason=self._stop_reason)
        progress.setdefault("env_steps_per_s", 0.0)
        progress.setdefault("learner_steps_per_s", 0.0)
        progress.setdefault("replay_size", -1)
        return progress

    def register_address(self, node: str, address: str) -> None:
        """Node `node` ("label/index") serves at `address` (host:port). Multi-node launches only."""
        with self._lock:
            self._addresses[node] = address

    def lookup_address(self, node: str) -> Optional[str]:
        """The address node `node` registered, or None while it has not."""
        with self._lock:
            return self._addresses.get(node)

    def request_stop(self, reason: str) -> None:
        """Asks every node to stop (multi-node launches poll `stop_reason`); the first reason stays."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
                if not self._watchers:
                    self._all_told.set()

    def stop_reason(self, watcher: Optional[str] = None) -> Optional[str]:
        """Why the program stops, or None while it runs. `watcher`: the node process asking
        (multi-node launches poll this); the counter outlives the stop until each has heard it."""
        with self._lock:
            if watcher is not None:
                self._watchers.add(watcher)
                if self._stop_reason is not None:
                    self._told_to_stop.add(watcher)
                    if self._watchers <= self._told_to_stop:
                        self._all_told.set()
            return self._stop_reason

    def node_finished(self, node: str) -> None:
        """`node` has made its last report."""
        with self._lock:
            self._finished.add(node)
            if self._expected <= self._finished:
                self._all_finished.set()

    def run(self):
        stop = lp.stop_event()
        saved = time.time()
        while not stop.wait(0.5):
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
        summary.write_summary(self._config, self.get_counts(), self._counts_before, time.time() - self._start)
        # Every polling node hears the stop before the counter goes (one that polled after the
        # counter had gone would wait for it to come back).
        self._all_told.wait(max(0.0, deadline - time.time()))

    def _save_counts(self) -> None:
        summary.write_json(os.path.join(self._config.run_dir, summary.COUNTS_FILE), self.get_counts())


class CountBuffer:
    """Adds counts to the counter in batches, prefixed as acme's child counters do ("actor_steps").

    A batch is sent at most every `every_s` seconds, numbered: one whose call fails (the
    counter is busy, the program is stopping) is sent again with its number, so the counter
    applies each batch exactly once. `flush(client)` sends what is left, through another
    client if given (at a stop, `rpc.final_client`).
    """

    def __init__(self, client, prefix: str, every_s: float = 0.5):
        self._client = client
        self._prefix = prefix
        self._every_s = every_s
        self._sender = f"{prefix}-{uuid.uuid4().hex}"
        self._pending: Dict[str, float] = {}
        self._unacknowledged: Optional[Tuple[int, Dict[str, float]]] = None
        self._sequence = 0
        self._sent_at = time.time()

    def increment(self, **counts) -> None:
        for key, value in counts.items():
            key = f"{self._prefix}_{key}"
            self._pending[key] = self._pending.get(key, 0) + value
        if time.time() - self._sent_at >= self._every_s:
            try:
                self.flush()
            except Exception:  # kept; the next send or the final flush takes it
                pass

    def flush(self, client=None) -> None:
        """Sends every count not yet acknowledged; raises if a call fails (nothing is lost)."""
        self._sent_at = time.time()
        while self._unacknowledged is not None or self._pending:
            if self._unacknowledged is None:
                self._sequence += 1
                self._unacknowledged, self._pending = (self._sequence, self._pending), {}
            sequence, counts = self._unacknowledged
            (client or self._client).add_counts(self._sender, sequence, counts)
            self._unacknowledged = None


def finish(client, node: str, counts: Optional[CountBuffer] = None) -> None:
    """At a node's stop: its last counts and that it has finished, if the counter still answers.
    `client`: `rpc.final_client(counter)`."""
    try:
        if counts is not None:
            counts.flush(client)
        client.node_finished(node)
    except Exception as error:  # the counter is gone: the summary keeps what it had
        print(f"{node}: the counter did not take the final report ({type(error).__name__})", flush=True)
