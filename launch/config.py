"""One experiment's configuration: what the program builder needs, and nothing about how it is launched."""

import dataclasses
import typing
from typing import Optional, Tuple, Union

import numpy as np

from agents.config import MPOConfig
from environments.config import EnvironmentConfig
from replay.config import ReplayConfig

# Actor environments of one launch take seeds 1-999 above the launch's base (see actor_environment).
_MAX_ACTOR_ENVIRONMENTS = 999


@dataclasses.dataclass(frozen=True)
class RaEConfig:
    """Replay Across Experiments: earlier runs' experience mixed into every learner batch."""

    runs: Tuple[str, ...]  # run directories (resolved, absolute)
    # Share of each batch drawn from the earlier runs' data; exact in every batch.
    ratio: float = 0.5
    # Per run: keep only the most recent this many steps / episodes with at least this return.
    max_steps: Optional[int] = None
    min_return: Optional[float] = None
    skip_corrupt: bool = False
    # Optional linear anneal: the share goes from `ratio` to `final_ratio` over the first
    # `anneal_learner_steps` learner steps, then stays there.
    final_ratio: Optional[float] = None
    anneal_learner_steps: int = 0
    # Transitions the selection yields, counted by the launcher before anything starts.
    offline_items: int = 0

    def __post_init__(self):
        if not self.runs:
            raise ValueError("RaEConfig.runs is empty: pass at least one run directory to --rae_from.")
        if not 0.0 < self.ratio < 1.0:
            raise ValueError(f"--rae_ratio must be in (0, 1), got {self.ratio}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"--rae_max_steps must be >= 1, got {self.max_steps}.")
        if self.final_ratio is not None:
            if not 0.0 <= self.final_ratio < 1.0:
                raise ValueError(f"--rae_final_ratio must be in [0, 1), got {self.final_ratio}.")
            if self.anneal_learner_steps < 1:
                raise ValueError(f"--rae_anneal_steps must be >= 1 with --rae_final_ratio, got {self.anneal_learner_steps}.")

    @property
    def annealed(self) -> bool:
        return self.final_ratio is not None

    def ratio_at(self, learner_step: int) -> float:
        if not self.annealed:
            return self.ratio
        progress = min(1.0, learner_step / self.anneal_learner_steps)
        return self.ratio + (self.final_ratio - self.ratio) * progress

    def offline_batch_size(self, batch_size: int, learner_step: int = 0) -> int:
        """Offline items in the batch of `learner_step`: round(ratio x batch_size), exactly."""
        return int(round(self.ratio_at(learner_step) * batch_size))


@dataclasses.dataclass(frozen=True)
class ResumeConfig:
    """A stopped or killed run continued where it was (--resume)."""

    # The checkpoint (step directory) whose learner state is restored; None: the run had
    # none yet, the learner starts fresh (its recorded data is still reloaded).
    checkpoint: Optional[str]
    # The counter's totals saved with that checkpoint: env and learner steps go on from there.
    counts: Tuple[Tuple[str, float], ...] = ()
    # This run's own recorded transitions put back into the online table before actors start.
    refill_items: int = 0
    # 0 is the run's first launch; each resume adds one (actors then draw fresh seeds).
    launch_index: int = 1

    def count(self, name: str) -> float:
        return dict(self.counts).get(name, 0.0)


@dataclasses.dataclass(frozen=True)
class InitFromConfig:
    """A new run that starts from another run's networks (--init_from)."""

    checkpoint: str  # step directory
    parts: str = "all"  # "policy", "critic" or "all"


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    agent: str  # "mpo", "dmpo" or "mog" (the head inside `learner` decides; this names it)
    environment: EnvironmentConfig
    # Everything the run writes goes under this directory, and nowhere else.
    run_dir: str
    learner: MPOConfig
    replay: ReplayConfig = ReplayConfig()
    num_actors: int = 4
    # Each actor steps this many environments, choosing all their actions with one policy
    # call: the call's cost is shared, and one process does the work of several.
    envs_per_actor: int = 1
    # The program stops once actors have taken this many environment steps in total.
    max_env_steps: int = 1_000_000
    seed: int = 0
    # Actors pull the newest policy parameters every this many of their own steps.
    actor_update_period: int = 1000
    # The learner makes a fresh copy of its policy parameters for actors every this many updates.
    learner_publish_period: int = 10
    # Updates per call of the jitted learner step (`Learner.update_many`, a scan on the device),
    # on k batches sampled and sent to the device as one: fewer Python calls, Reverb samples
    # and transfers per update, for a learner that outruns them (a GPU's). Checkpoints,
    # publishing and the stop take effect between calls (at most k - 1 updates later).
    learner_steps_per_call: int = 1
    # The evaluator runs the greedy policy for eval_episodes episodes every this many learner steps.
    eval_every_learner_steps: int = 1000
    eval_episodes: int = 5
    # Actors write every step they take to run_dir/experience (replay.experience), for later runs.
    record_experience: bool = True
    # An environment step with a NaN or infinity in its observation, reward or discount, or one
    # whose physics crashed (dm_control's PhysicsError): False ends that episode there (nothing
    # bad is stored), logs it and acts on; True ends the run with a RunError naming it.
    non_finite_env_fatal: bool = False
    # Replay Across Experiments: None trains on this run's own data only.
    rae: Optional[RaEConfig] = None
    # Learner and progress metrics get a row at most this often (actors: one per episode).
    log_every_s: float = 1.0
    # The learner saves its state to run_dir/checkpoints every this many minutes and every
    # this many learner steps (whichever comes first), and when the program stops.
    checkpoint_every_minutes: float = 10.0
    checkpoint_every_learner_steps: int = 5000
    checkpoints_to_keep: int = 3
    # A node process that dies is started again (every launch type but local_mt), at most
    # max_restarts_per_node times within any restart_window_minutes; one more death inside the
    # window stops the run, naming the node. A node that dies now and then never adds up to
    # the end of a long run; one that dies in a fast loop stops it. inf: over the whole run.
    max_restarts_per_node: int = 3
    restart_window_minutes: float = 60.0
    # The learner does not apply an update whose loss or gradients hold a NaN or an infinity
    # (it keeps its last good state and counts it); this many in a row end the run.
    max_nonfinite_updates_in_a_row: int = 10
    resume: Optional[ResumeConfig] = None
    # Used when the learner has no checkpoint of this run to restore.
    init_from: Optional[InitFromConfig] = None

    def __post_init__(self):
        for name, minimum in (("num_actors", 1), ("envs_per_actor", 1), ("max_env_steps", 1), ("actor_update_period", 1),
                              ("learner_publish_period", 1), ("learner_steps_per_call", 1),
                              ("eval_every_learner_steps", 1), ("eval_episodes", 1),
                              ("checkpoint_every_learner_steps", 1), ("checkpoints_to_keep", 1),
                              ("max_restarts_per_node", 0), ("max_nonfinite_updates_in_a_row", 1)):
            if getattr(self, name) < minimum:
                raise ValueError(f"ExperimentConfig.{name} must be >= {minimum}, got {getattr(self, name)!r}.")
        for name in ("log_every_s", "checkpoint_every_minutes", "restart_window_minutes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ExperimentConfig.{name} must be > 0, got {getattr(self, name)!r}.")
        if self.rae is not None:
            offline = self.rae.offline_batch_size(self.replay.batch_size)
            if not 0 < offline < self.replay.batch_size:
                raise ValueError(f"--rae_ratio={self.rae.ratio} gives {offline} offline items in a batch of "
                                 f"{self.replay.batch_size}; it must leave at least one of each kind.")
        if self.seed < 0:
            raise ValueError(f"ExperimentConfig.seed must be >= 0, got {self.seed!r}.")
        if self.environment.pixels is not None and self.environment.pixels.include_state:
            raise ValueError("environment.pixels.include_state is on: a run learns from pixels or from the state, "
                             "not both; --set pixels.include_state=false.")
        if self.num_actors * self.envs_per_actor > _MAX_ACTOR_ENVIRONMENTS:
            raise ValueError(f"num_actors x envs_per_actor = {self.num_actors} x {self.envs_per_actor} environments; "
                             f"at most {_MAX_ACTOR_ENVIRONMENTS} (each needs its own seed): lower one of them.")

    def online_replay(self) -> ReplayConfig:
        """The online table's settings. With RaE, a batch holds fewer online items; the
        sample-to-insert ratio shrinks with them, so learner updates per env step stay
        what they are without RaE. An annealed share sets it for the share the anneal
        ends at (the learner makes more updates per env step during the anneal)."""
        if self.rae is None or self.replay.samples_per_insert is None:
            return self.replay
        steady_step = self.rae.anneal_learner_steps if self.rae.annealed else 0
        share = 1.0 - self.rae.offline_batch_size(self.replay.batch_size, steady_step) / self.replay.batch_size
        return dataclasses.replace(self.replay, samples_per_insert=self.replay.samples_per_insert * share)

    def evaluator_environment(self) -> EnvironmentConfig:
        """A seed no actor uses."""
        return dataclasses.replace(self.environment, seed=self.seed * 10_000 + 9_999)

    @property
    def launch_index(self) -> int:
        """0 for the run's first launch; each resume adds one."""
        return self.resume.launch_index if self.resume is not None else 0

    def actor_environment(self, actor_id: int, env_index: int = 0, restart: int = 0) -> EnvironmentConfig:
        """Each actor environment's own seed, derived from the experiment's: new in each resumed
        launch, and in each restart of the actor's process (`restart` > 0)."""
        stream = actor_id * self.envs_per_actor + env_index
        seed = self.seed * 10_000 + 1_000 * self.launch_index + stream + 1
        if restart > 0:  # out of the first launches' range, one per (launch, stream, restart)
            seed = int(np.random.SeedSequence([self.seed, self.launch_index, stream, restart]).generate_state(1)[0])
        return dataclasses.replace(self.environment, seed=seed)

    @property
    def refill_items(self) -> int:
        return self.resume.refill_items if self.resume is not None else 0


def _from_json_value(annotation, value):
    if value is None:
        return None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Union:
        options = [option for option in args if option is not type(None)]
        if len(options) > 1:  # the critic head: the class whose default name the value carries
            options = [option for option in options if option().name == value.get("name")]
        return _from_json_value(options[0], value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_json_value(args[0], item) for item in value)
        return tuple(_from_json_value(arg, item) for arg, item in zip(args, value))
    if dataclasses.is_dataclass(annotation):
        return dataclass_from_json(annotation, value)
    return value


def dataclass_from_json(cls, data: dict):
    """The frozen config `cls` from its `dataclasses.asdict` JSON (a run's config.json)."""
    hints = typing.get_type_hints(cls)
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {unknown}: the config was written by another Relay version.")
    return cls(**{name: _from_json_value(hints[name], value) for name, value in data.items()})
