"""The learner's loop as an object: the learner node, the data-path benchmark and the tests drive it.

`LearnerLoop.step()` is one call of the update (one, or `learner_steps_per_call` updates on as
many batches sent as one): sample, update, then each part that is due
(checkpoint, publish the acting parameters, log a metrics row) and the non-finite guard.
The node wires it to RPC (the counter, the actors' parameter requests) and the stop;
nothing here knows Launchpad.
"""

import threading
import time
from typing import Callable, Optional, Tuple

import jax
import numpy as np
import reverb

import agents
import replay
from launch.config import ExperimentConfig
from launch.faults import RunError
from launch.faults.nonfinite import NonFiniteGuard
from launch.rundir import checkpoints
from launch.rundir.jsonio import write_json
from launch.rundir.metrics import MetricsWriter
from launch.rundir.paths import RunPaths

# Sampling gives up after this long held by the rate limiter, and starts again unless the
# program is stopping (replay.transitions).
_SAMPLE_TIMEOUT_MS = 500
# The tables' signatures are asked for with this timeout, again until the replay server answers
# or the program stops: without one, a learner starting as the server stopped waited forever.
_SIGNATURE_TIMEOUT_S = 5
# `step()` waits at most this long for a batch (the rate limiter may hold sampling).
_BATCH_WAIT_S = 0.5


def host_copy(tree):
    """Numpy arrays that own their memory. The device state is donated to the next update, and on
    a CPU `jax.device_get` may return views of device buffers: where XLA honours the donation
    (an executable from JAX's persistent compilation cache did, on jax 0.4.30) such a view
    changes under the next update."""
    return jax.tree_util.tree_map(np.array, jax.device_get(tree))


def initial_state(config: ExperimentConfig, learner: agents.Learner, restarted: bool = False):
    """A fresh state, the resumed run's checkpoint, or fresh with another run's networks (--init_from).
    A restarted learner (`restarted`: its process died) loads the run's newest checkpoint, as
    --resume does."""
    state = learner.init(jax.random.PRNGKey(config.seed))
    newest = checkpoints.list_steps(config.run_dir) if restarted else []
    if newest:
        checkpoint, skipped = checkpoints.load_latest(config.run_dir)
        print(f"learner: restarted from checkpoint {checkpoint.path} (learner step {checkpoint.step})"
              + (f"; skipped damaged {', '.join(skipped)}" if skipped else ""), flush=True)
        state = checkpoints.restore_state(state, checkpoint)
    elif config.resume is not None and config.resume.checkpoint is not None:
        state = checkpoints.restore_state(state, checkpoints.load(config.resume.checkpoint))
    elif config.init_from is not None:
        state = checkpoints.init_from(state, checkpoints.load(config.init_from.checkpoint), config.init_from.parts)
    return jax.device_put(state, learner.replicated)


def checkpoint_meta(config: ExperimentConfig, learner: agents.Learner) -> dict:
    """What a checkpoint says of the run that wrote it (evaluate and init_from read it)."""
    return {"agent": config.agent, "task": config.environment.task, "seed": config.seed,
            "observation_shape": list(learner.observation_shape), "action_dim": learner.action_dim}


def offline_items(config: ExperimentConfig, first_step: int, batch_index: int) -> int:
    """RaE items in the batch_index-th batch of a launch whose learner starts at `first_step`.
    Batches are used in order, one an update: a resumed run's anneal goes on from its step."""
    return config.rae.offline_batch_size(config.replay.batch_size, first_step + batch_index)


def replay_batches(config: ExperimentConfig, layout: replay.Layout, address: str, learner: agents.Learner,
                   first_step: int, stop: threading.Event) -> Optional[replay.DevicePrefetcher]:
    """The learner's batches from the replay server at `address`, on its devices: RaE's exact
    share of each batch mixed in. With k = `learner_steps_per_call` > 1, k batches a time,
    [k, B, ...], sampled as one. None if the program stopped before the server answered."""
    steps = config.learner_steps_per_call
    batch_size = config.replay.batch_size

    def dataset(**kwargs):
        while True:
            try:
                return replay.make_dataset(address, config.replay, layout, **kwargs,
                                           rate_limiter_timeout_ms=_SAMPLE_TIMEOUT_MS,
                                           signature_timeout_s=_SIGNATURE_TIMEOUT_S)
            except reverb.errors.DeadlineExceededError:
                if stop.is_set():
                    return None
                print(f"learner: the replay server at {address} does not answer; asking again", flush=True)

    if config.rae is None:
        online = dataset(batch_size=steps * batch_size)
        if online is None:
            return None
        source = replay.transitions(online, stop)
        if steps > 1:
            source = (replay.split_into_steps(batch, steps) for batch in source)
    else:
        # Each of a call's k batches holds its own update's share: k mixed batches, stacked;
        # each table is still sampled k batches' worth at a time.
        first_offline = offline_items(config, first_step, 0)
        online = dataset(table=replay.ONLINE_TABLE, batch_size=steps * (batch_size - first_offline))
        offline = None if online is None else dataset(table=replay.OFFLINE_TABLE,
                                                      batch_size=steps * max(1, first_offline))
        if offline is None:
            return None
        source = replay.mixed_transitions(online, offline, batch_size,
                                          lambda index: offline_items(config, first_step, index), stop)
        if steps > 1:
            source = replay.stacked(source, steps)
    sharding = learner.batch_sharding if steps == 1 else learner.stacked_batch_sharding
    return replay.DevicePrefetcher(source, sharding, size=config.replay.prefetch_batches)


class LearnerLoop:
    """Updates the learner on sampled batches; checkpoints, publishes and logs as they fall due.

    batches: `next(timeout) -> batch or None` (None while sampling is held) and `close()`
        (`replay_batches`, or any source of device batches).
    counter: the counter's totals, `get_counts() -> dict`, saved with each checkpoint; or None.
    counts: where the learner's step goes, `set(steps=)` (the node's CountBuffer); or None.
    restarted: the learner's process died and this one goes on from the newest checkpoint.

    `published` is (learner step, host copy of the acting parameters), replaced whole every
    `learner_publish_period` updates; other threads may read it at any time.
    """

    def __init__(self, config: ExperimentConfig, learner: agents.Learner, state, batches, counter=None,
                 counts=None):
        self._config = config
        self._learner = learner
        self._state = state
        self._batches = batches
        self._counter = counter
        self._counts = counts
        self.first_step = int(state.steps)
        self.steps = self.first_step  # updates made, skipped ones included until the guard reads them
        self._guard = NonFiniteGuard(config.max_nonfinite_updates_in_a_row, config.run_dir, self.first_step)
        self._saver = checkpoints.CheckpointWriter(config.run_dir, config.checkpoints_to_keep,
                                                   checkpoint_meta(config, learner))
        self._log = MetricsWriter(config.run_dir, "learner", step_key="learner_step")
        # The counter's totals saved with each checkpoint; refreshed as metrics are logged.
        self.counter_totals = dict(config.resume.counts) if config.resume is not None else {}
        now = time.time()
        self._logged_steps, self._logged_time = self.first_step, now
        self._saved_steps, self._saved_time = self.first_step, now
        self.metrics: dict = {}
        self.published: Tuple[int, dict] = (self.first_step, host_copy(self._acting_params()))

    @property
    def state(self):
        return self._state

    @property
    def skipped_updates(self) -> int:
        return self._guard.skipped

    def _acting_params(self):
        return self._learner.networks.acting_params(self._state.policy_params, self._state.critic_params)

    def step(self) -> bool:
        """One call of the update (`learner_steps_per_call` updates) and whatever falls due after
        it; False if no batch came within 0.5 s."""
        batch = self._batches.next(timeout=_BATCH_WAIT_S)  # None while the rate limiter holds sampling
        if batch is None:
            return False
        before = self.steps
        metrics = self._update(batch)
        now = time.time()
        if (self.steps - self._saved_steps >= self._config.checkpoint_every_learner_steps
                or now - self._saved_time >= 60.0 * self._config.checkpoint_every_minutes):
            self._checkpoint(now)
        period = self._config.learner_publish_period
        if self.steps // period != before // period:  # this call passed a multiple of the period
            self._publish(metrics)
            if now - self._logged_time >= self._config.log_every_s or self._guard.tripped_at is not None:
                self._log_row(now)
            self._guard.check()  # K skipped in a row: a RunError, after the row that shows them
            if self._counts is not None:  # as read: never ahead of the state's step
                self._counts.set(steps=self.steps)
        return True

    def _update(self, batch) -> dict:
        steps = self._config.learner_steps_per_call
        if steps == 1:
            self._state, metrics = self._learner.update(self._state, batch)
            flags = metrics["nonfinite_updates"]
        else:
            self._state, metrics = self._learner.update_many(self._state, batch)
            flags = metrics.pop("nonfinite_each")
        # A skipped (non-finite) update leaves the state's step as it was. Its flag is read
        # with the metrics, not here (that would make each step wait for the device): till
        # then `steps` counts the update as applied, and each `_read_flags` makes it the
        # state's step counter again.
        self._guard.record(flags)
        self.steps += steps
        return metrics

    def _read_flags(self) -> int:
        self.steps = self._guard.read()
        return self.steps

    def _checkpoint(self, now: float) -> None:
        self._read_flags()
        self._refresh_counter_totals()
        self.save("periodic")
        self._saved_steps, self._saved_time = self.steps, now

    def _publish(self, metrics: dict) -> None:
        steps = self._read_flags()
        self.published = (steps, host_copy(self._acting_params()))
        self.metrics = {key: float(value) for key, value in jax.device_get(metrics).items()}

    def _log_row(self, now: float) -> None:
        rate = (self.steps - self._logged_steps) / (now - self._logged_time)
        row = {"learner_step": self.steps, "learner_steps_per_s": rate, **self.metrics,
               "skipped_updates": self._guard.skipped}  # in this launch
        if self._config.rae is not None:  # the last batch's index: skipped updates used one too
            row["rae_offline_items"] = offline_items(
                self._config, self.first_step, self.steps + self._guard.skipped - 1 - self.first_step)
        self._log.write(row, now)
        self._logged_steps, self._logged_time = self.steps, now
        self._refresh_counter_totals()

    def _refresh_counter_totals(self) -> None:
        if self._counter is not None:
            self.counter_totals = self._counter.get_counts()

    def save(self, reason: str) -> None:
        """A checkpoint of the state at its step, with the counter's totals (none if that step is saved)."""
        path = self._saver.save(self._state, {**self.counter_totals, "learner_steps": self.steps}, reason)
        if path is not None:
            print(f"learner: checkpoint {path} ({reason})", flush=True)

    def settle(self) -> int:
        """At a stop, first: reads the updates' flags not read yet, so that `steps` is exact in
        the final reports, and hands it to `counts`. Returns the learner step."""
        try:
            self._read_flags()
            if self._counts is not None:
                self._counts.set(steps=self.steps)
        except Exception as error:  # the device failed: the final save says so too
            print(f"learner: the last updates' flags were not read: {type(error).__name__}: {error}", flush=True)
        return self.steps

    def close(self, counter_totals: Optional[dict] = None) -> None:
        """At every stop (the step limit, Ctrl-C, SIGTERM), after `settle`: stops sampling, saves
        the final checkpoint with `counter_totals` (the counter's, or the last ones seen), and
        writes learner.json. A full disk at the final save raises its RunError; another
        failure is reported without hiding an error that stopped the loop."""
        if counter_totals is not None:
            self.counter_totals = counter_totals
        self._batches.close()
        final_error = None
        try:
            try:
                self.save("final")  # a full disk: a RunError saying so, its partial save removed
            finally:
                self._saver.close()
        except Exception as error:
            print(f"learner: the final checkpoint failed: {type(error).__name__}: {error}", flush=True)
            final_error = error
        self._log.close()
        write_json(RunPaths(self._config.run_dir).node_totals("learner"),
                   {"learner_steps": self.steps, "published_version": self.published[0], "metrics": self.metrics,
                    "skipped_updates": self._guard.skipped})
        if isinstance(final_error, RunError):  # a full disk ends the run saying so, not quietly
            raise final_error

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Steps until `should_stop()`."""
        while not should_stop():
            self.step()
