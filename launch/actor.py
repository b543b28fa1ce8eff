"""The actor's loop as an object: the actor node, the actor benchmarks and the tests all drive it.

`Actor.step()` is one policy call and one step of each of the actor's environments; the
node wires it to RPC clients and the stop, nothing more.
"""

import time
from typing import Callable, Optional

import numpy as np

import agents
import environments
import replay
from launch.config import ExperimentConfig
from launch.metrics import MetricsWriter

# Actors add their steps to the shared counter this often: often enough for the step
# limit and the progress line, rarely enough to cost nothing (an increment is ~3 us).
COUNT_EVERY_STEPS = 100
# The parts of a step, timed on their own (bench actor_costs reports them).
PARTS = ("policy", "step", "write", "record")


class _Episode:
    """One environment's episode so far, and the actor's step count when it began."""

    __slots__ = ("steps", "total_return", "start_time", "start_actor_steps")

    def __init__(self, start_actor_steps: int):
        self.steps, self.total_return = 0, 0.0
        self.start_time, self.start_actor_steps = time.time(), start_actor_steps


class Actor:
    """Steps `config.envs_per_actor` environments with the newest policy and inserts n-step transitions.

    Each environment has its own seed and episodes; one policy call chooses all their
    actions. Every step also goes to disk (`replay.experience`) unless
    `config.record_experience` is off.

    policy_source: anything with `get_policy_params(newer_than) -> (version, params or None)`
        (the learner's RPC client, or a local `PolicyServer`).
    counter: what the steps and episodes are added to, with `increment(steps=, episodes=)` (the
        node's `launch.counter.CountBuffer`, or an acme Counter), or None.
    log: where a row per finished episode goes, or None.
    """

    def __init__(self, config: ExperimentConfig, actor_id: int, replay_client, policy_source,
                 counter=None, log: Optional[MetricsWriter] = None):
        self._config = config
        self._policy_source = policy_source
        self._counter = counter
        self._log = log
        num_envs = config.envs_per_actor
        self._envs = [environments.make_environment(config.actor_environment(actor_id, k)) for k in range(num_envs)]
        spec = self._envs[0].environment_spec
        self._select_action, _ = agents.make_policy_fns(agents.Networks(config.learner, spec.actions.shape[0]).policy)
        self.writer = replay.make_writer(replay_client, config.replay, replay.ONLINE_TABLE, num_envs=num_envs)
        self._recorders = []
        if config.record_experience:
            replay.experience.write_spec(config.run_dir, config.environment.task, spec)
            self._recorders = [replay.experience.ExperienceRecorder(config.run_dir, actor_id,
                                                                    env_index=None if num_envs == 1 else k)
                               for k in range(num_envs)]
        # One raw threefry key per policy call, [seed, step], built on the host: a jax.random.split
        # per call would be a second device dispatch, ~40 us of a ~100 us physics step.
        self._action_key = np.array([config.actor_environment(actor_id).seed, 0], np.uint32)
        self._observations = np.empty((num_envs,) + spec.observations.shape, np.float32)
        self._timesteps = [None] * num_envs
        self._episodes = [None] * num_envs
        self.steps = 0  # environment steps taken, all environments together
        self._counted_steps = self._fetched_at_steps = 0
        self.episode_returns = []
        self.version, self._params = -1, None
        self.versions_seen = []
        # Seconds spent in each part of the step since the actor began (a few perf_counter calls a step).
        self.part_seconds = dict.fromkeys(PARTS, 0.0)

    @property
    def num_envs(self) -> int:
        return len(self._envs)

    def start(self) -> None:
        """Fetches the policy and begins every environment's first episode."""
        self._fetch_policy()
        for k in range(self.num_envs):
            self._start_episode(k)

    def _fetch_policy(self) -> None:
        newest, params = self._policy_source.get_policy_params(newer_than=self.version)
        self.versions_seen.append(newest)
        if params is not None:
            self.version, self._params = newest, agents.params_on_cpu(params)

    def _start_episode(self, k: int) -> None:
        timestep = self._envs[k].reset()
        self.writer.add_first(timestep, k)
        if self._recorders:
            self._recorders[k].add_first(timestep)
        self._timesteps[k] = timestep
        self._episodes[k] = _Episode(self.steps)

    def step(self) -> None:
        """One policy call for all environments, then one step of each."""
        if self._params is None:
            self.start()
        clock = time.perf_counter
        t0 = clock()
        for k, timestep in enumerate(self._timesteps):
            self._observations[k] = timestep.observation
        self._action_key[1] = self.steps
        actions = np.asarray(self._select_action(self._params, self._observations, self._action_key))
        # One part for every environment, then the next part: each part's code and data
        # stay in the caches. Environment by environment through all parts, the physics
        # ran ~15% slower and the writes ~2x (bench actor_costs, 8 environments).
        t1 = clock()
        stepped = [env.step(action) for env, action in zip(self._envs, actions)]
        t2 = clock()
        for k, timestep in enumerate(stepped):
            self.writer.add(actions[k], timestep, k)
        t3 = clock()
        for recorder, action, timestep in zip(self._recorders, actions, stepped):
            recorder.add(action, timestep)
        t4 = clock()
        seconds = self.part_seconds
        seconds["policy"] += t1 - t0
        seconds["step"] += t2 - t1
        seconds["write"] += t3 - t2
        seconds["record"] += t4 - t3
        for k, timestep in enumerate(stepped):
            self._timesteps[k] = timestep
            episode = self._episodes[k]
            episode.steps += 1
            episode.total_return += float(timestep.reward)
            if timestep.last():
                self._end_episode(k, episode)
        self.steps += self.num_envs
        if self.steps - self._counted_steps >= COUNT_EVERY_STEPS:
            self.flush_counts()
        if self.steps - self._fetched_at_steps >= self._config.actor_update_period:
            self._fetch_policy()
            self._fetched_at_steps = self.steps

    def _end_episode(self, k: int, episode: _Episode) -> None:
        self.episode_returns.append(episode.total_return)
        # Environments step in turn: environment k's episode ended at the actor's (steps + k + 1)-th step.
        taken, now = self.steps + k + 1, time.time()
        if self._counter is not None:
            self._counter.increment(steps=taken - self._counted_steps, episodes=1)
        self._counted_steps = taken
        if self._log is not None:
            self._log.write({"actor_steps": taken, "episode": len(self.episode_returns), "env": k,
                             "episode_return": episode.total_return, "episode_length": episode.steps,
                             "steps_per_s": (taken - episode.start_actor_steps) / (now - episode.start_time),
                             "param_version": self.version}, now)
        self._start_episode(k)

    def run(self, num_steps: int, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Steps until `num_steps` more environment steps are taken or `should_stop()`."""
        target = self.steps + num_steps
        while self.steps < target and not should_stop():
            self.step()

    def flush_counts(self) -> None:
        """Adds the steps not yet counted to the counter."""
        if self._counter is not None and self.steps > self._counted_steps:
            self._counter.increment(steps=self.steps - self._counted_steps)
        self._counted_steps = self.steps

    def summary(self) -> dict:
        return {"actor_steps": self.steps, "envs_per_actor": self.num_envs, "episode_returns": self.episode_returns,
                "param_versions_seen": self.versions_seen}

    def close(self) -> None:
        """Closes the environments, the writer and the recorders (flushing what they hold)."""
        for env in self._envs:
            env.close()
        self.writer.close()
        for recorder in self._recorders:
            recorder.close()
