"""The monitor node: progress figures for the counter, and the stop at `max_env_steps`."""

import time

import launchpad as lp

import replay
from launch.config import ExperimentConfig
from launch.nodes.rpc import ProgramStopped, StoppableClient
from launch.rundir.metrics import MetricsWriter


class Monitor:
    """Watches the program's totals: reports progress, and stops the program at `max_env_steps`.

    Every poll it reports rates and table sizes to the counter (the launcher's progress line
    reads them there); every `log_every_s` it adds a row to metrics/progress.csv.
    """

    def __init__(self, config: ExperimentConfig, counter, replay_client, poll_seconds: float = 0.25):
        self._config = config
        self._counter = counter
        self._replay_client = replay_client
        self._poll_seconds = poll_seconds

    def _table_sizes(self) -> dict:
        """replay_size: the online table's items; offline_size: RaE's table, when there is one (-1: unknown)."""
        sizes = {"replay_size": -1}
        if self._config.rae is not None:
            sizes["offline_size"] = -1
        try:
            info = self._replay_client.server_info(timeout=1)
        except Exception:  # the server is going away with the program: leave the figures out
            return sizes
        sizes["replay_size"] = int(info[replay.ONLINE_TABLE].current_size)
        if self._config.rae is not None:
            sizes["offline_size"] = int(info[replay.OFFLINE_TABLE].current_size)
        return sizes

    def run(self):
        stop = lp.stop_event()
        config = self._config
        counter = StoppableClient(self._counter, stop)
        log = MetricsWriter(config.run_dir, "progress", step_key="env_steps")
        start = last_time = time.time()
        last_env, last_learner, logged_time = 0, 0, start
        env_rate = learner_rate = 0.0
        try:
            while not stop.wait(self._poll_seconds):
                counts = counter.get_counts()
                env_steps, learner_steps = int(counts.get("actor_steps", 0)), int(counts.get("learner_steps", 0))
                now = time.time()
                # Rates over the last ~2 s: smooth enough to read, recent enough to follow changes.
                mix = min(1.0, (now - last_time) / 2.0)
                env_rate += mix * ((env_steps - last_env) / (now - last_time) - env_rate)
                learner_rate += mix * ((learner_steps - last_learner) / (now - last_time) - learner_rate)
                last_env, last_learner, last_time = env_steps, learner_steps, now
                progress = {
                    "env_steps": env_steps, "learner_steps": learner_steps, "episodes": int(counts.get("actor_episodes", 0)),
                    "env_steps_per_s": env_rate, "learner_steps_per_s": learner_rate,
                    **self._table_sizes(), "elapsed_s": now - start, "max_env_steps": config.max_env_steps,
                }
                counter.report_progress({k: v for k, v in progress.items() if k.endswith("_per_s") or k.endswith("_size")})
                if now - logged_time >= config.log_every_s:
                    log.write({k: v for k, v in progress.items() if k != "max_env_steps"}, now)
                    logged_time = now
                # A stop asked of the counter (a launcher, experiments.sweep stop) reaches the node
                # processes of a multi-process launch through their own polling; threads, through this.
                if env_steps >= config.max_env_steps or counter.stop_reason() is not None:
                    lp.stop()
                    return
        except ProgramStopped:
            return
        finally:
            log.close()
