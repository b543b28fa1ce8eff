"""The learner node: samples batches, updates, publishes its policy, and checkpoints."""

import threading
import time
from typing import Optional, Tuple

import jax
import launchpad as lp
import reverb

import agents
import replay
from launch import checkpoints, launching
from launch import counter as counter_node
from launch.config import ExperimentConfig
from launch.faults import RunError
from launch.metrics import MetricsWriter
from launch.nonfinite import NonFiniteGuard
from launch.nodes import reverb_address, write_json
from launch.rpc import ProgramStopped, StoppableClient, final_client

# Sampling gives up after this long held by the rate limiter, and starts again unless the
# program is stopping (replay.transitions).
_SAMPLE_TIMEOUT_MS = 500
# The tables' signatures are asked for with this timeout, again until the replay server answers
# or the program stops: without one, a learner starting as the server stopped waited forever.
_SIGNATURE_TIMEOUT_S = 5


def initial_learner_state(config: ExperimentConfig, learner: agents.Learner):
    """A fresh state, the resumed run's checkpoint, or fresh with another run's networks (--init_from).
    A restarted learner (its process died) loads the run's newest checkpoint, as --resume does."""
    state = learner.init(jax.random.PRNGKey(config.seed))
    newest = checkpoints.list_steps(config.run_dir) if launching.node_attempt() > 0 else []
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


def final_counts(counter_handle, learner_counts: counter_node.CountBuffer, fallback: dict) -> dict:
    """At a stop: sends the learner's last steps, says the learner has finished reporting, and
    returns the counter's totals; `fallback` (the last totals seen) if the counter is gone."""
    client = final_client(counter_handle)
    counter_node.finish(client, "learner", learner_counts)
    try:
        return client.get_counts()
    except Exception:  # gone with the program
        return dict(fallback)


class LearnerNode:
    """Samples batches, updates, hands out copies of its policy parameters, and checkpoints."""

    def __init__(self, config: ExperimentConfig, spec, replay_client, counter):
        self._config = config
        self._replay_client = replay_client
        self._counter_handle = counter
        self._learner = agents.Learner(config.learner, spec.observations.shape, spec.actions.shape[0])
        self._learner.check_batch_size(config.replay.batch_size)
        self._layout = replay.layout_of(spec)
        self._state = initial_learner_state(config, self._learner)
        self._initial_steps = int(self._state.steps)
        self._lock = threading.Lock()
        # A host copy: the device state is donated to the next update.
        self._published: Tuple[int, dict] = (self._initial_steps, jax.device_get(self._acting_params()))
        self.metrics: dict = {}

    def _acting_params(self):
        return self._learner.networks.acting_params(self._state.policy_params, self._state.critic_params)

    def get_policy_params(self, newer_than: int = -1) -> Tuple[int, Optional[dict]]:
        """(version, numpy policy params: `Networks.acting_params`, the encoder's too for pixels);
        the version is the learner step they come from.

        The params are None when the version is not above `newer_than`: a caller that has
        them already is not sent ~0.5 MB again."""
        with self._lock:
            version, params = self._published
        return (version, params) if version > newer_than else (version, None)

    def _batches(self, stop: threading.Event):
        address, config = reverb_address(self._replay_client), self._config

        def dataset(**kwargs):
            while True:
                try:
                    return replay.make_dataset(address, config.replay, self._layout, **kwargs,
                                               rate_limiter_timeout_ms=_SAMPLE_TIMEOUT_MS,
                                               signature_timeout_s=_SIGNATURE_TIMEOUT_S)
                except reverb.errors.DeadlineExceededError:
                    if stop.is_set():
                        raise ProgramStopped() from None
                    print(f"learner: the replay server at {address} does not answer; asking again", flush=True)

        if config.rae is None:
            return replay.transitions(dataset(), stop)
        offline = self._offline_count(0)
        return replay.mixed_transitions(
            dataset(table=replay.ONLINE_TABLE, batch_size=config.replay.batch_size - offline),
            dataset(table=replay.OFFLINE_TABLE, batch_size=max(1, offline)),
            config.replay.batch_size, self._offline_count, stop)

    def _offline_count(self, batch_index: int) -> int:
        """RaE items in the learner's batch_index-th batch of this launch. Batches are used in
        order, one an update: a resumed run's anneal goes on from its checkpoint's step."""
        return self._config.rae.offline_batch_size(self._config.replay.batch_size, self._initial_steps + batch_index)

    def run(self):
        stop = lp.stop_event()
        config = self._config
        counter = StoppableClient(self._counter_handle, stop)
        # One try a send: while the counter is away (restarting) the learner trains on.
        learner_counts = counter_node.CountBuffer(StoppableClient(self._counter_handle, stop, tries=1), prefix="learner")
        try:
            source = self._batches(stop)
        except ProgramStopped:  # before the replay server answered: nothing was trained
            return
        batches = replay.DevicePrefetcher(source, self._learner.batch_sharding, size=config.replay.prefetch_batches)
        log = MetricsWriter(config.run_dir, "learner", step_key="learner_step")
        guard = NonFiniteGuard(config.max_nonfinite_updates_in_a_row, config.run_dir, self._initial_steps)
        saver = checkpoints.CheckpointWriter(config.run_dir, config.checkpoints_to_keep, checkpoint_meta(config, self._learner))
        # The counter's totals saved with each checkpoint; refreshed as metrics are logged.
        counts = dict(config.resume.counts) if config.resume is not None else {}
        steps = logged_steps = saved_steps = self._initial_steps
        logged_time = saved_time = time.time()

        def save(reason: str):
            path = saver.save(self._state, {**counts, "learner_steps": steps}, reason)
            if path is not None:
                print(f"learner: checkpoint {path} ({reason})", flush=True)

        try:
            while not stop.is_set():
                batch = batches.next(timeout=0.5)  # None while the rate limiter holds sampling
                if batch is None:
                    continue
                self._state, metrics = self._learner.update(self._state, batch)
                # A skipped (non-finite) update leaves the state's step as it was. Its flag is
                # read with the metrics, not here (that would make each step wait for the
                # device): till then `steps` counts the update as applied, and each
                # guard.read() below makes it the state's step counter again.
                guard.record(metrics["nonfinite_updates"])
                steps += 1
                now = time.time()
                if (steps - saved_steps >= config.checkpoint_every_learner_steps
                        or now - saved_time >= 60.0 * config.checkpoint_every_minutes):
                    steps = guard.read()
                    counts = counter.get_counts()
                    save("periodic")
                    saved_steps, saved_time = steps, now
                if steps % config.learner_publish_period == 0:
                    steps = guard.read()
                    # A host copy: the device state is donated to the next update.
                    params, metrics = jax.device_get((self._acting_params(), metrics))
                    with self._lock:
                        self._published = (steps, params)
                    self.metrics = {k: float(v) for k, v in metrics.items()}
                    if now - logged_time >= config.log_every_s or guard.tripped_at is not None:
                        rate = (steps - logged_steps) / (now - logged_time)
                        row = {"learner_step": steps, "learner_steps_per_s": rate, **self.metrics,
                               "skipped_updates": guard.skipped}  # in this launch
                        if config.rae is not None:  # the last batch's index: skipped updates used one too
                            row["rae_offline_items"] = self._offline_count(steps + guard.skipped - 1 - self._initial_steps)
                        log.write(row, now)
                        logged_steps, logged_time = steps, now
                        counts = counter.get_counts()
                    guard.check()  # K skipped in a row: a RunError, after the row that shows them
                    # The learner's step, as read (never ahead of the state's); after a restart,
                    # it goes on from the checkpoint's.
                    learner_counts.set(steps=steps)
        except ProgramStopped:
            pass
        finally:
            try:  # the flags not read yet, so that `steps` is exact in the final reports
                steps = guard.read()
                learner_counts.set(steps=steps)
            except Exception as error:  # the device failed: the final save below says so too
                print(f"learner: the last updates' flags were not read: {type(error).__name__}: {error}", flush=True)
            # At every stop (the step limit, Ctrl-C, SIGTERM), with the counter's totals if it
            # still answers, else the last ones seen; the learner's own step count is exact.
            # First: the counter waits only so long, and closing the batches can take seconds.
            counts = final_counts(self._counter_handle, learner_counts, counts)
            batches.close()
            final_error = None
            try:
                try:
                    save("final")  # a full disk: a RunError saying so, its partial save removed
                finally:
                    saver.close()
            except Exception as error:  # reported, without hiding an error that stopped the loop
                print(f"learner: the final checkpoint failed: {type(error).__name__}: {error}", flush=True)
                final_error = error
            log.close()
            write_json(config, "learner.json", {"learner_steps": steps, "published_version": self._published[0], "metrics": self.metrics,
                                               "skipped_updates": guard.skipped})
            if isinstance(final_error, RunError):  # a full disk ends the run saying so, not quietly
                raise final_error
