"""Filling replay before actors start: RaE's earlier runs, a resumed run's own experience."""

import threading

import replay
from launch.config import ExperimentConfig, RaEConfig
from launch.nodes.process import node_attempt
from launch.rundir.jsonio import write_json
from launch.rundir.paths import RunPaths


def rae_selection(rae: RaEConfig):
    """The earlier runs' experience that RaE loads, selected as the config says (one per run)."""
    return [replay.offline.select_experience(run, rae.max_steps, rae.min_return, rae.skip_corrupt) for run in rae.runs]


def refill_selection(config: ExperimentConfig):
    """A resumed run's own recorded experience that goes back into its online table: the
    most recent steps the table can hold."""
    return replay.offline.select_experience(config.run_dir, max_steps=config.replay.max_size)


class ReplayLoader:
    """Fills replay before actors start, once, and exits: earlier runs' experience into
    the offline table (RaE), and a resumed run's own experience back into the online table.

    Files are only read. The learner cannot sample the offline table before every item
    is in (its rate limiter is MinSize of the full count); the refilled online table's
    rate limiter counts the refill as already sampled (replay.tables). Actors wait for
    the load to finish before they start.
    """

    def __init__(self, config: ExperimentConfig, spec, replay_client):
        self._config = config
        # Items written as this run's actors write theirs (pixel runs: frames stored once).
        self._layout = replay.layout_of(spec)
        self._replay_client = replay_client

    def run(self):
        config = self._config
        if node_attempt() > 0:  # restarted mid-load: what the dead process inserted goes first
            for table in [replay.ONLINE_TABLE] * bool(config.refill_items) + [replay.OFFLINE_TABLE] * bool(config.rae):
                self._replay_client.reset(table)
        if config.refill_items:
            items = replay.offline.write_offline(self._replay_client, [refill_selection(config)], config.replay,
                                                 table=replay.ONLINE_TABLE, layout=self._layout)
            if items != config.refill_items:
                raise RuntimeError(f"The resumed run reloaded {items} of its transitions where the launch counted "
                                   f"{config.refill_items}: {config.run_dir}/experience changed in between.")
        rae = config.rae
        if rae is not None:
            runs = rae_selection(rae)
            items = replay.offline.write_offline(self._replay_client, runs, config.replay, layout=self._layout)
            if items != rae.offline_items:
                raise RuntimeError(f"RaE loaded {items} transitions where the launch counted {rae.offline_items}: "
                                   "the runs' experience changed in between.")
            write_json(RunPaths(config.run_dir).rae, {**replay.offline.summarize(runs), "items": items, "ratio": rae.ratio})


def wait_for_loaded_data(config: ExperimentConfig, replay_client, stop: threading.Event) -> None:
    """Returns once the ReplayLoader is done (at once if there is none), or on stop."""
    # The online table keeps at most max_size of the refill (the selection ends on whole episodes).
    wanted = {replay.ONLINE_TABLE: min(config.refill_items, config.replay.max_size), replay.OFFLINE_TABLE: config.rae.offline_items if config.rae else 0}
    while any(wanted.values()) and not stop.is_set():
        try:
            info = replay_client.server_info(timeout=1)
            loaded = all(info[table].current_size >= items for table, items in wanted.items() if items)
        except Exception:  # the server is still starting, or going away with the program
            loaded = False
        if loaded:
            return
        stop.wait(0.5)
