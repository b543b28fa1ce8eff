"""Faults a run survives and faults that end it.

A node process that dies (SIGKILL, an OOM kill, a crashed simulator, an exception) is
started again by its supervisor (`launch.runtime.supervisor`), up to a budget. An error that
no restart mends is a `RunError`: the node asks the counter to stop the whole run with
its message, and nothing is restarted.
"""

from typing import Dict, List, Mapping

import dm_env
import numpy as np

# The exit code of a node process that raised RunError: its supervisor does not restart it.
RUN_ERROR_EXIT_CODE = 3
# The exit code of a node process told by the counter that a newer process of its node runs
# (its host was cut off and taken for lost, and the node started again elsewhere): nothing
# restarts it, and no launcher takes it for a failure.
SUPERSEDED_EXIT_CODE = 4
# How the counter's stop reason for such a process begins (`CounterNode.stop_reason`).
SUPERSEDED = "superseded"


class RunError(RuntimeError):
    """An error that ends the run, whatever restarts are left: bad input made fatal, a
    learner whose updates keep coming out non-finite, a full disk. The message names the
    problem and what to do."""


def non_finite_fields(fields: Mapping[str, object]) -> list:
    """The names of the fields holding a NaN or an infinity (numbers or arrays)."""
    return [name for name, value in fields.items()
            if np.asarray(value).dtype.kind in "fc" and not np.isfinite(value).all()]


def non_finite_step_fields(timestep: dm_env.TimeStep, layout: Dict[str, slice]) -> List[str]:
    """The parts of `timestep` holding a NaN or an infinity: "observation.<name>" for each named
    dm_control observation (`layout`: RelayEnvironment.observation_layout), "reward", "discount".
    Frames (uint8) cannot hold either: only the reward and the discount are looked at."""
    observation = np.asarray(timestep.observation)
    fields = {}
    if observation.dtype.kind == "f":
        fields = {f"observation.{name}": observation[where] for name, where in layout.items()}
    return non_finite_fields({**fields, "reward": timestep.reward, "discount": timestep.discount})
