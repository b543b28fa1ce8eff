"""One experiment's configuration: what the program builder needs, and nothing about how it is launched."""

import dataclasses

from agents.config import MPOConfig
from environments.config import EnvironmentConfig
from replay.config import ReplayConfig


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    agent: str  # "mpo", "dmpo" or "mog" (the head inside `learner` decides; this names it)
    environment: EnvironmentConfig
    # Everything the run writes goes under this directory, and nowhere else.
    run_dir: str
    learner: MPOConfig
    replay: ReplayConfig = ReplayConfig()
    num_actors: int = 4
    # The program stops once actors have taken this many environment steps in total.
    max_env_steps: int = 1_000_000
    seed: int = 0
    # Actors pull the newest policy parameters every this many of their own steps.
    actor_update_period: int = 1000
    # The learner makes a fresh copy of its policy parameters for actors every this many updates.
    learner_publish_period: int = 10
    # The evaluator runs the greedy policy for eval_episodes episodes every this many learner steps.
    eval_every_learner_steps: int = 1000
    eval_episodes: int = 5
    # Actors write every step they take to run_dir/experience (replay.experience), for later runs.
    record_experience: bool = True
    # Learner and progress metrics get a row at most this often (actors: one per episode).
    log_every_s: float = 1.0

    def __post_init__(self):
        for name, minimum in (("num_actors", 1), ("max_env_steps", 1), ("actor_update_period", 1),
                              ("learner_publish_period", 1), ("eval_every_learner_steps", 1), ("eval_episodes", 1)):
            if getattr(self, name) < minimum:
                raise ValueError(f"ExperimentConfig.{name} must be >= {minimum}, got {getattr(self, name)!r}.")
        if not self.log_every_s > 0:
            raise ValueError(f"ExperimentConfig.log_every_s must be > 0, got {self.log_every_s!r}.")
        if self.seed < 0:
            raise ValueError(f"ExperimentConfig.seed must be >= 0, got {self.seed!r}.")

    def evaluator_environment(self) -> EnvironmentConfig:
        """A seed no actor uses."""
        return dataclasses.replace(self.environment, seed=self.seed * 10_000 + 9_999)

    def actor_environment(self, actor_id: int) -> EnvironmentConfig:
        """Each actor's own seed, derived from the experiment's."""
        return dataclasses.replace(self.environment, seed=self.seed * 10_000 + actor_id + 1)
