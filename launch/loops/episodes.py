"""Whole episodes of one environment with one policy: the evaluator node, `experiments.evaluate`
(and its videos), `experiments.rollout` and the benchmarks all run their episodes here.

Actors do not: they step several environments with one policy call (`launch.loops.actor`).
"""

import dataclasses
from typing import Callable, List, Optional, Sequence

import dm_env
import numpy as np
from dm_control.rl import control

from launch.faults import non_finite_step_fields


@dataclasses.dataclass(frozen=True)
class Episode:
    total_return: float
    steps: int  # environment steps taken (a step that went wrong is not one of them)
    # The episode reached its LAST step; False if it was stopped, or ended at a bad step.
    finished: bool
    # What ended it early: a NaN or infinity in the step (named), or the physics crashing.
    problem: Optional[str] = None


def uniform_random_policy(action_spec, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """Actions drawn uniformly within the action spec's bounds: the baseline a learning result is
    compared with."""
    rng = np.random.default_rng(seed)
    return lambda observation: rng.uniform(action_spec.minimum, action_spec.maximum,
                                           action_spec.shape).astype(np.float32)


class Filmer:
    """An episode's frames, one every `stride` steps (the first timestep's included), for videos."""

    def __init__(self, env, stride: int, size=(240, 320), camera_id: int = 0):
        self._env, self._stride, self._size, self._camera_id = env, stride, size, camera_id
        self.frames: List[np.ndarray] = []
        self._steps = 0

    def add_first(self, timestep: dm_env.TimeStep) -> None:
        self._steps = 0
        self.frames.append(self._env.render(*self._size, camera_id=self._camera_id))

    def add(self, action, timestep: dm_env.TimeStep) -> None:
        self._steps += 1
        if self._steps % self._stride == 0:
            self.frames.append(self._env.render(*self._size, camera_id=self._camera_id))


class EpisodeRunner:
    """Runs `env` with `policy` (observation -> action) episode after episode.

    observers: each takes every timestep of an episode as a writer does, `add_first(timestep)`,
        then `add(action, next_timestep)` (an n-step writer, an experience recorder, a Filmer).
    check_steps: end an episode at a step with a NaN or infinity in its observation, reward or
        discount, or whose physics crashed (`Episode.problem` says which), instead of going on
        (or raising MuJoCo's PhysicsError).
    """

    def __init__(self, env, policy: Callable[[np.ndarray], np.ndarray], observers: Sequence = (),
                 check_steps: bool = False):
        self._env = env
        self._policy = policy
        self._observers = list(observers)
        self._check_steps = check_steps
        self._layout = getattr(env, "observation_layout", {})

    def run_episode(self, should_stop: Callable[[], bool] = lambda: False) -> Episode:
        """One episode, to its end or until `should_stop()` (checked before each step)."""
        timestep = self._env.reset()
        for observer in self._observers:
            observer.add_first(timestep)
        total_return, steps = 0.0, 0
        while not timestep.last():
            if should_stop():
                return Episode(total_return, steps, finished=False)
            action = self._policy(timestep.observation)
            try:
                timestep = self._env.step(action)
            except control.PhysicsError as error:  # MuJoCo's state went invalid
                if not self._check_steps:
                    raise
                return Episode(total_return, steps, finished=False, problem=f"PhysicsError ({error})")
            if self._check_steps:
                fields = non_finite_step_fields(timestep, self._layout)
                if fields:
                    return Episode(total_return, steps, finished=False,
                                   problem=f"NaN or infinity in {', '.join(fields)}")
            for observer in self._observers:
                observer.add(action, timestep)
            total_return += float(timestep.reward)
            steps += 1
        return Episode(total_return, steps, finished=True)

    def run(self, episodes: int, should_stop: Callable[[], bool] = lambda: False) -> List[Episode]:
        """Up to `episodes` episodes; the list ends early, with the unfinished one, at a stop or a
        bad step."""
        done = []
        for _ in range(episodes):
            done.append(self.run_episode(should_stop))
            if not done[-1].finished:
                break
        return done
