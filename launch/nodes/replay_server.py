"""The replay server node: Launchpad's Reverb node, refilled when its process is restarted."""

import functools
import os
import threading
import time

import launchpad as lp
import reverb

import replay
from launch.nodes import launchpad_internals, loader
from launch.nodes.process import node_attempt
from launch.config import ExperimentConfig


def _replay_checkpointer(run_dir: str):
    # Reverb's default checkpointer would make a directory under /tmp; a run writes only in its own.
    return reverb.checkpointers.DefaultCheckpointer(os.path.join(run_dir, "replay_checkpoint"))


class ReplayNode(lp.ReverbNode):
    """The online table (and RaE's offline table). A restarted server (its process died)
    is refilled from the run's recorded experience, as `--resume` refills one, and RaE's
    earlier runs are loaded again; actors' writers and the learner's datasets reconnect to
    it at the same address. Lost: what the actors had not yet recorded (~2 s of steps).
    """

    def __init__(self, config: ExperimentConfig, spec):
        self._config = config
        self._spec = spec
        self._refill_items = config.refill_items
        self._checkpointer = functools.partial(_replay_checkpointer, config.run_dir)
        super().__init__(self._tables, checkpoint_ctor=self._checkpointer)

    def _tables(self):
        config = self._config
        tables = [replay.make_online_table(config.online_replay(), self._spec, refill_items=self._refill_items)]
        if config.rae is not None:
            tables.append(replay.make_offline_table(config.rae.offline_items, self._spec, replay.OFFLINE_TABLE))
        return tables

    def run(self):
        refill = self._restart_refill() if node_attempt() > 0 else None
        if refill is not None:
            self._refill_items = refill.steps  # the rate limiter counts it as sampled, as a resume's
        port = launchpad_internals.reverb_port(self)
        self._server = reverb.Server(tables=self._tables(), port=port, checkpointer=self._checkpointer())
        if node_attempt() > 0:
            threading.Thread(target=self._refill, args=(port, refill), daemon=True, name="refill").start()
        lp.wait_for_stop()

    def _restart_refill(self):
        """The run's most recent recorded experience the online table can hold, or None."""
        try:
            return loader.refill_selection(self._config)
        except (FileNotFoundError, ValueError) as error:  # nothing recorded yet, or recording is off
            print(f"replay: restarted empty ({error})", flush=True)
            return None

    def _refill(self, port: int, refill) -> None:
        try:
            self._load(port, refill)
        except Exception as error:  # said in the log; the server goes on with what it has
            print(f"replay: the refill after the restart failed: {type(error).__name__}: {error}", flush=True)

    def _load(self, port: int, refill) -> None:
        config, start = self._config, time.time()
        client = reverb.Client(f"localhost:{port}")
        items = 0
        if refill is not None:
            items = replay.offline.write_offline(client, [refill], config.replay, table=replay.ONLINE_TABLE,
                                                 layout=replay.layout_of(self._spec))
        if config.rae is not None:
            replay.offline.write_offline(client, loader.rae_selection(config.rae), config.replay,
                                         layout=replay.layout_of(self._spec))
        print(f"replay: restarted and refilled with {items:,} recorded transitions"
              + (" and RaE's runs" if config.rae is not None else "") + f" in {time.time() - start:.1f} s", flush=True)
