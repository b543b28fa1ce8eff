"""The actor's loop as an object: the actor node, the actor benchmarks and the tests all drive it.

`Actor.step()` is one policy call and one step of each of the actor's environments; the
node wires it to RPC clients and the stop, nothing more.
"""

import math
import time
from typing import Callable, Dict, Optional

import dm_env
import numpy as np
from dm_control.rl import control

import agents
import environments
import replay
from launch.config import ExperimentConfig
from launch.faults import RunError, disk_full, non_finite_step_fields
from launch.rundir.metrics import MetricsWriter

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
        node's `launch.nodes.counter.CountBuffer`, or an acme Counter), or None. One that buffers
        has `send() -> bool`, called before each recording is written.
    log: where a row per finished episode goes, or None.
    record_every_s: the recording is written this often (what a killed actor loses at most).
    """

    def __init__(self, config: ExperimentConfig, actor_id: int, replay_client, policy_source,
                 counter=None, log: Optional[MetricsWriter] = None, restart: int = 0, record_every_s: float = 2.0):
        self._config = config
        self._actor_id = actor_id
        self._policy_source = policy_source
        self._counter = counter
        self._log = log
        num_envs = config.envs_per_actor
        # A restarted actor (`restart` > 0: its process died) draws fresh seeds.
        self._envs = [environments.make_environment(config.actor_environment(actor_id, k, restart))
                      for k in range(num_envs)]
        spec = self._envs[0].environment_spec
        self._observation_layout = self._envs[0].observation_layout  # one task: the same in every environment
        self._select_action, _ = agents.make_policy_fns(
            agents.Networks(config.learner, spec.actions.shape[0], spec.observations.shape))
        # Frame stacks: replay and the recording keep each step's newest frame only (`stored`).
        self._pixels = config.environment.pixels is not None
        started = time.time()
        self.writer = replay.make_writer(replay_client, config.replay, replay.ONLINE_TABLE, num_envs=num_envs,
                                         layout=replay.layout_of(spec))
        if time.time() - started > 1.0:
            print(f"actor {actor_id}: the replay writer took {time.time() - started:.1f} s to connect", flush=True)
        self._recorders = []
        if config.record_experience:
            replay.experience.write_spec(config.run_dir, config.environment.task, spec)
            # The actor writes their chunks itself (`_record`), after counting the steps in them.
            self._recorders = [replay.experience.ExperienceRecorder(config.run_dir, actor_id, flush_on_add=False,
                                                                    flush_every_s=record_every_s,
                                                                    env_index=None if num_envs == 1 else k)
                               for k in range(num_envs)]
        # One raw threefry key per policy call, [seed, step], built on the host: a jax.random.split
        # per call would be a second device dispatch, ~40 us of a ~100 us physics step.
        self._action_key = np.array([config.actor_environment(actor_id, restart=restart).seed, 0], np.uint32)
        # [E, O] (or [E, S, H, W, 3] frames): each environment's newest observation, the policy's next input.
        self._observations = np.empty((num_envs,) + spec.observations.shape, spec.observations.dtype)
        self._episodes = [None] * num_envs
        self.steps = 0  # environment steps taken, all environments together
        # Steps that gave a NaN / infinity or crashed the physics: not stored, their episodes cut there.
        self.bad_env_steps = 0
        self._counted_steps = self._fetched_at_steps = 0
        self._counts_unsent = False  # the last send before a recording failed
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

    def _stored(self, timestep: dm_env.TimeStep) -> dm_env.TimeStep:
        """The timestep as replay and the recording take it: a frame stack's newest frame only."""
        return timestep._replace(observation=timestep.observation[-1]) if self._pixels else timestep

    def _start_episode(self, k: int) -> None:
        timestep = self._envs[k].reset()
        stored = self._stored(timestep)
        self.writer.add_first(stored, k)
        if self._recorders:
            self._recorders[k].add_first(stored)
        self._observations[k] = timestep.observation
        self._episodes[k] = _Episode(self.steps)

    def step(self) -> None:
        """One policy call for all environments, then one step of each."""
        if self._params is None:
            self.start()
        clock = time.perf_counter
        t0 = clock()
        self._action_key[1] = self.steps
        actions = np.asarray(self._select_action(self._params, self._observations, self._action_key))
        # One part for every environment, then the next part: each part's code and data
        # stay in the caches. Environment by environment through all parts, the physics
        # ran ~15% slower and the writes ~2x (bench actor_costs, 8 environments).
        t1 = clock()
        observations, stepped, crashed = self._observations, [], {}
        for k, (env, action) in enumerate(zip(self._envs, actions)):
            try:
                timestep = env.step(action)
            except control.PhysicsError as error:  # MuJoCo's state went invalid (a NaN or huge qpos, qacc, ...)
                crashed[k], timestep = f"PhysicsError ({error})", None
            else:
                observations[k] = timestep.observation
            stepped.append(timestep)
        t2 = clock()
        # One vectorised check of all observations (~2 us); the bad steps are only named when it fails.
        bad = crashed
        if crashed or not ((self._pixels or np.isfinite(observations).all())
                           and all(math.isfinite(t.reward) and math.isfinite(t.discount) for t in stepped)):
            bad = self._bad_steps(stepped, crashed)
        kept = range(self.num_envs) if not bad else [k for k in range(self.num_envs) if k not in bad]
        stored = [t and self._stored(t) for t in stepped] if self._pixels else stepped  # None: the physics crashed
        for k in kept:
            self.writer.add(actions[k], stored[k], k)
        t3 = clock()
        for k in kept if self._recorders else ():
            self._recorders[k].add(actions[k], stored[k])
        t4 = clock()
        seconds = self.part_seconds
        seconds["policy"] += t1 - t0
        seconds["step"] += t2 - t1
        seconds["write"] += t3 - t2
        seconds["record"] += t4 - t3
        for k in kept:
            timestep = stepped[k]
            episode = self._episodes[k]
            episode.steps += 1
            episode.total_return += float(timestep.reward)
            if timestep.last():
                self._end_episode(k, episode)
        for k, problem in bad.items():
            self._end_episode_before_bad_step(k, problem, actions[k])
        # A bad step counts as an environment step: it was simulated (it cost the time of any
        # other), though it is no transition, so replay holds fewer items than steps taken.
        self.steps += self.num_envs
        if any(recorder.due() for recorder in self._recorders):
            started = clock()
            self._record()
            seconds["record"] += clock() - started
        elif self.steps - self._counted_steps >= COUNT_EVERY_STEPS:
            self.flush_counts()
        if self.steps - self._fetched_at_steps >= self._config.actor_update_period:
            self._fetch_policy()
            self._fetched_at_steps = self.steps

    def _bad_steps(self, stepped: list, crashed: Dict[int, str]) -> Dict[int, str]:
        """Environment -> what is wrong with its step, for the steps that crashed or hold a NaN or
        infinity; with `non_finite_env_fatal`, raises RunError for the first instead."""
        bad = dict(crashed)
        for k, timestep in enumerate(stepped):
            fields = [] if timestep is None else non_finite_step_fields(timestep, self._observation_layout)
            if fields:
                bad[k] = f"NaN or infinity in {', '.join(fields)}"
        if bad and self._config.non_finite_env_fatal:
            k = min(bad)
            raise RunError(f"{self._bad_step_description(k, bad[k])}. experiment.non_finite_env_fatal is on, so this "
                           "ends the run; --set=experiment.non_finite_env_fatal=false ends just that episode, logs it "
                           "and acts on.")
        return bad

    def _bad_step_description(self, k: int, problem: str) -> str:
        # The step is the episode's (steps + 1)-th, and the actor's (steps + k + 1)-th (environments step in turn).
        return (f"actor {self._actor_id} env {k}, task {self._config.environment.task}: {problem} at episode step "
                f"{self._episodes[k].steps + 1} (actor step {self.steps + k + 1})")

    def _end_episode_before_bad_step(self, k: int, problem: str, action: np.ndarray) -> None:
        """Ends environment k's episode at its last good timestep and begins a new one.

        The writer's pending steps go in as transitions bootstrapping from that timestep (their
        values are all finite and real; the episode is cut, as a time limit cuts one), and the
        recording keeps the episode without a LAST step: a later run rebuilds the same items
        from it. The cut episode's return is not a full one: it is neither logged nor counted
        as an episode."""
        print(f"{self._bad_step_description(k, problem)}; the episode ends before that step (which is not "
              "stored) and a new one begins", flush=True)
        self.bad_env_steps += 1
        self.writer.end_unfinished_episode(k)
        if self._recorders:
            self._recorders[k].end_unfinished_episode(action)
        if self._counter is not None:
            self._counter.increment(bad_env_steps=1)
        self._start_episode(k)

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

    def _record(self) -> None:
        """Writes the recorders' chunks once the counter has every step taken so far, so that
        an actor process that dies has counted at least every step it left on disk (when the
        counter takes the send: one it misses, while it restarts, leaves that chunk's steps
        for the next send)."""
        self.flush_counts()
        send = getattr(self._counter, "send", None)  # a CountBuffer holds its totals until it sends them
        if send is not None:
            sent = send()
            if not sent and not self._counts_unsent:  # said once while the counter is away
                print(f"actor {self._actor_id}: the counter did not take the counts before a recording; "
                      "recording on", flush=True)
            self._counts_unsent = not sent
        self._flush_recorders()

    def _flush_recorders(self, close: bool = False) -> None:
        """Writes what the recorders hold; a full disk ends the run with a RunError that says so."""
        for recorder in self._recorders:
            try:
                recorder.close() if close else recorder.flush()
            except replay.experience.ChunkWriteError as error:
                full = disk_full.recording_error(error, self._config.run_dir)
                if full is None:
                    raise
                raise full from error

    def flush_counts(self) -> None:
        """Adds the steps not yet counted to the counter."""
        if self._counter is not None and self.steps > self._counted_steps:
            self._counter.increment(steps=self.steps - self._counted_steps)
        self._counted_steps = self.steps

    def summary(self) -> dict:
        return {"actor_steps": self.steps, "envs_per_actor": self.num_envs, "episode_returns": self.episode_returns,
                "bad_env_steps": self.bad_env_steps, "param_versions_seen": self.versions_seen}

    def close(self) -> None:
        """Closes the environments, the writer and the recorders (flushing what they hold)."""
        for env in self._envs:
            env.close()
        self.writer.close()
        self._flush_recorders(close=True)
