"""The program's nodes: learner, actors and a step limiter (replay and counter are stock).

Each node builds its own objects in its own process from the plain config it is
given, and returns from `run()` when the program stops, so shutdown is clean.
"""

import csv
import json
import os
import threading
import time
from typing import Tuple

import jax
import launchpad as lp
import numpy as np
from acme.utils import counting

import agents
import environments
import replay
from launch.config import ExperimentConfig
from launch.rpc import ProgramStopped, StoppableClient


def reverb_address(client) -> str:
    """The server address of a reverb.Client (Reverb 0.7 keeps it only in this attribute)."""
    return client._server_address  # pylint: disable=protected-access


def write_json(config: ExperimentConfig, name: str, data: dict) -> None:
    """Writes run_dir/<name> atomically (a reader never sees half a file)."""
    path = os.path.join(config.run_dir, name)
    with open(path + ".tmp", "w") as file:
        json.dump(data, file, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def run_off_main_thread(loop, name: str) -> None:
    """Runs `loop` in a worker thread and waits for it, keeping this thread free for signals.

    Python runs signal handlers only on the main thread, between bytecodes. A node whose
    main thread is blocked in a C++ call (a Reverb insert held by the rate limiter) never
    sees SIGTERM, so the stop handler that would unblock it never runs.
    """
    errors = []

    def target():
        try:
            loop()
        except BaseException as error:  # re-raised in the calling thread
            errors.append(error)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
    if errors:
        raise errors[0]


def environment_spec(config: ExperimentConfig):
    env = environments.make_environment(config.environment)
    spec = env.environment_spec
    env.close()
    return spec


class LearnerNode:
    """Samples batches, updates, and hands out copies of its policy parameters."""

    def __init__(self, config: ExperimentConfig, replay_client, counter):
        self._config = config
        self._replay_client = replay_client
        self._counter_handle = counter
        spec = environment_spec(config)
        self._learner = agents.Learner(config.learner, spec.observations.shape[0], spec.actions.shape[0])
        self._learner.check_batch_size(config.replay.batch_size)
        self._state = self._learner.init(jax.random.PRNGKey(config.seed))
        self._lock = threading.Lock()
        self._published: Tuple[int, dict] = (0, jax.device_get(self._state.policy_params))
        self.metrics: dict = {}

    def get_policy_params(self) -> Tuple[int, dict]:
        """(version, numpy policy params); the version is the learner step they come from."""
        with self._lock:
            return self._published

    def run(self):
        stop = lp.stop_event()
        counter = counting.Counter(StoppableClient(self._counter_handle, stop), prefix="learner", time_delta=0.5)
        dataset = replay.make_dataset(reverb_address(self._replay_client), self._config.replay)
        batches = replay.DevicePrefetcher(
            replay.transitions(dataset, self._config.replay), self._learner.batch_sharding,
            size=self._config.replay.prefetch_batches,
        )
        steps = 0
        try:
            while not stop.is_set():
                batch = batches.next(timeout=0.5)  # None while the rate limiter holds sampling
                if batch is None:
                    continue
                self._state, metrics = self._learner.update(self._state, batch)
                steps += 1
                if steps % self._config.learner_publish_period == 0:
                    # A host copy: the device state is donated to the next update.
                    params = jax.device_get(self._state.policy_params)
                    with self._lock:
                        self._published = (steps, params)
                    self.metrics = {k: float(v) for k, v in metrics.items()}
                counter.increment(steps=1)
        except ProgramStopped:
            pass
        finally:
            batches.close()
            write_json(self._config, "learner.json", {"learner_steps": steps, "published_version": self._published[0], "metrics": self.metrics})


class ActorNode:
    """Steps its own environment with the latest policy and inserts n-step transitions."""

    def __init__(self, config: ExperimentConfig, actor_id: int, replay_client, learner, counter):
        self._config = config
        self._actor_id = actor_id
        self._replay_client = replay_client
        self._learner_handle = learner
        self._counter_handle = counter
        self.versions_seen = []

    def run(self):
        # Launchpad's stop event is per node thread: fetched here, handed to the loop.
        stop = lp.stop_event()
        run_off_main_thread(lambda: self._act(stop), name=f"actor-{self._actor_id}")

    def _act(self, stop: threading.Event):
        config = self._config
        learner = StoppableClient(self._learner_handle, stop)
        counter = counting.Counter(StoppableClient(self._counter_handle, stop), prefix="actor", time_delta=0.5)
        env = environments.make_environment(config.actor_environment(self._actor_id))
        policy = agents.Networks(config.learner, env.action_spec().shape[0]).policy
        select_action, _ = agents.make_policy_fns(policy)
        adder = replay.make_adder(self._replay_client, config.replay)
        # One raw threefry key per step, [seed, step], built on the host: a jax.random.split
        # per step would be a second device dispatch, ~40 us of a ~100 us physics step.
        action_key = np.array([config.actor_environment(self._actor_id).seed, 0], np.uint32)
        steps = 0
        episode_returns = []
        # An insert blocked by the rate limiter (the learner has stopped sampling) would
        # never see the stop event: closing the writer on stop makes it return with an error.
        lp.register_stop_handler(adder.close)
        try:
            version, params = learner.get_policy_params()
            self.versions_seen.append(version)
            while not stop.is_set():
                timestep = env.reset()
                adder.add_first(timestep)
                episode_steps, episode_return = 0, 0.0
                while not timestep.last() and not stop.is_set():
                    action_key[1] = steps
                    action = np.asarray(select_action(params, timestep.observation, action_key))
                    timestep = env.step(action)
                    adder.add(action, timestep)
                    steps += 1
                    episode_steps += 1
                    episode_return += float(timestep.reward)
                    if steps % config.actor_update_period == 0:
                        version, params = learner.get_policy_params()
                        self.versions_seen.append(version)
                counter.increment(steps=episode_steps, episodes=int(timestep.last()))
                if timestep.last():
                    episode_returns.append(episode_return)
        except Exception:  # a closed writer or an abandoned call: expected only once stopping
            if not stop.is_set():
                raise
        finally:
            env.close()
            write_json(config, f"actor_{self._actor_id}.json", {
                "actor_steps": steps, "episode_returns": episode_returns, "param_versions_seen": self.versions_seen,
            })


class EvaluatorNode:
    """Runs the greedy policy every `eval_every_learner_steps` learner steps; one CSV row each time.

    evaluator.csv: learner_step, env_steps, mean_return, std_return, episodes, wall_time_s.
    """

    FIELDS = ("learner_step", "env_steps", "mean_return", "std_return", "episodes", "wall_time_s")

    def __init__(self, config: ExperimentConfig, learner, counter):
        self._config = config
        self._learner_handle = learner
        self._counter_handle = counter

    def run(self):
        stop = lp.stop_event()
        run_off_main_thread(lambda: self._evaluate_periodically(stop), name="evaluator")

    def _evaluate_periodically(self, stop: threading.Event):
        config = self._config
        learner = StoppableClient(self._learner_handle, stop)
        counter = StoppableClient(self._counter_handle, stop)
        env = environments.make_environment(config.evaluator_environment())
        _, greedy_action = agents.make_policy_fns(agents.Networks(config.learner, env.action_spec().shape[0]).policy)
        start = time.time()
        path = os.path.join(config.run_dir, "evaluator.csv")
        next_eval = 0
        try:
            with open(path, "w", newline="") as file:
                writer = csv.writer(file)
                writer.writerow(self.FIELDS)
                file.flush()
                while not stop.wait(0.5):
                    version, params = learner.get_policy_params()
                    if version < next_eval:
                        continue
                    returns = []
                    for _ in range(config.eval_episodes):
                        timestep, episode_return = env.reset(), 0.0
                        while not timestep.last() and not stop.is_set():
                            timestep = env.step(np.asarray(greedy_action(params, timestep.observation)))
                            episode_return += float(timestep.reward)
                        if not timestep.last():
                            return  # stopped mid-episode: no partial row
                        returns.append(episode_return)
                    env_steps = counter.get_counts().get("actor_steps", 0)
                    writer.writerow([version, env_steps, float(np.mean(returns)), float(np.std(returns)),
                                     len(returns), round(time.time() - start, 3)])
                    file.flush()
                    next_eval = version + config.eval_every_learner_steps
        except ProgramStopped:
            pass
        finally:
            env.close()


class StepLimiter:
    """Stops the program once actors have taken `max_env_steps` steps in total."""

    def __init__(self, config: ExperimentConfig, counter, poll_seconds: float = 0.5):
        self._config = config
        self._counter = counter
        self._max_env_steps = config.max_env_steps
        self._poll_seconds = poll_seconds

    def run(self):
        stop = lp.stop_event()
        counter = StoppableClient(self._counter, stop)
        while not stop.wait(self._poll_seconds):
            try:
                counts = counter.get_counts()
            except ProgramStopped:
                return
            if counts.get("actor_steps", 0) >= self._max_env_steps:
                write_json(self._config, "counts.json", counts)
                lp.stop()
                return
