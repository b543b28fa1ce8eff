"""dm_control suite tasks as Relay environments.

    env = environments.make_environment(environments.EnvironmentConfig("walker:walk", seed=0))

Importing this package picks MuJoCo's offscreen backend (see `rendering`), so
import it before anything that imports dm_control.
"""

from environments.config import EnvironmentConfig, PixelConfig
from environments.rendering import RenderingUnavailableError
from environments.tasks import load_task, parse_task_name, task_names
from environments.wrapper import ActionRescaler, ObservationFlattener, RelayEnvironment


def make_environment(config: EnvironmentConfig) -> RelayEnvironment:
    """Builds the environment `config` describes, in this process."""
    # With our own step limit the task's must not cut episodes first.
    time_limit = float("inf") if config.max_episode_steps is not None else None
    return RelayEnvironment(load_task(config.task, config.seed, time_limit), config)


def environment_spec(config: EnvironmentConfig):
    """The acme EnvironmentSpec of the environment `config` describes (built, read, closed).
    A launch computes it once and hands it to every node that needs it."""
    env = make_environment(config)
    try:
        return env.environment_spec
    finally:
        env.close()


__all__ = [
    "ActionRescaler",
    "EnvironmentConfig",
    "ObservationFlattener",
    "PixelConfig",
    "RelayEnvironment",
    "RenderingUnavailableError",
    "environment_spec",
    "load_task",
    "make_environment",
    "parse_task_name",
    "task_names",
]
