"""Published returns on dm_control tasks from state, to quote beside Relay's.

Each figure names its source and how its setting differs from Relay's: Relay counts every
simulator step (action repeat 1), as do these tables (CURL and DrQ report "environment
steps", action repeat included: 2 for walker and finger, 4 for reacher, 8 for cartpole).
"""

from typing import Dict, List, NamedTuple, Optional


class Published(NamedTuple):
    source: str
    algorithm: str
    task: str
    env_steps: int
    mean: float
    std: Optional[float]
    note: str = ""


_CURL = "CURL (Srinivas et al. 2020), Table 1, arXiv:2004.04136"
_DRQ = "DrQ (Kostrikov et al. 2020), Table 1, arXiv:2004.13649"
_STATE_SAC = ("SAC on states; the papers' action repeat (walker, finger 2; reacher 4; cartpole 8); "
              "network sizes not stated for State SAC")

PUBLISHED: List[Published] = [
    Published(_CURL, "State SAC", "walker:walk", 100_000, 891, 82, _STATE_SAC),
    Published(_CURL, "State SAC", "walker:walk", 500_000, 948, 54, _STATE_SAC),
    Published(_CURL, "State SAC", "finger:spin", 100_000, 811, 46, _STATE_SAC),
    Published(_CURL, "State SAC", "finger:spin", 500_000, 923, 21, _STATE_SAC),
    Published(_CURL, "State SAC", "reacher:easy", 100_000, 746, 25, _STATE_SAC),
    Published(_CURL, "State SAC", "reacher:easy", 500_000, 923, 24, _STATE_SAC),
    Published(_CURL, "State SAC", "cartpole:swingup", 100_000, 835, 22, _STATE_SAC),
    Published(_CURL, "State SAC", "cartpole:swingup", 500_000, 848, 15, _STATE_SAC),
    Published(_DRQ, "SAC State", "walker:walk", 100_000, 604, 317, _STATE_SAC),
    Published(_DRQ, "SAC State", "walker:walk", 500_000, 964, 8, _STATE_SAC),
    Published(_DRQ, "SAC State", "finger:spin", 100_000, 672, 76, _STATE_SAC),
    Published(_DRQ, "SAC State", "finger:spin", 500_000, 927, 43, _STATE_SAC),
    Published(_DRQ, "SAC State", "reacher:easy", 100_000, 919, 123, _STATE_SAC),
    Published(_DRQ, "SAC State", "reacher:easy", 500_000, 975, 5, _STATE_SAC),
    Published(_DRQ, "SAC State", "cartpole:swingup", 100_000, 812, 45, _STATE_SAC),
    Published(_DRQ, "SAC State", "cartpole:swingup", 500_000, 870, 7, _STATE_SAC),
    # Acme's distributed MPO and DMPO at 100k env steps (10 seeds), which bench learning has drawn
    # beside its cartpole curves since its first results.
    Published("Acme (Hoffman et al. 2020)", "MPO", "cartpole:swingup", 100_000, 763, None),
    Published("Acme (Hoffman et al. 2020)", "DMPO", "cartpole:swingup", 100_000, 669, None),
]


def for_task(task: str) -> List[Published]:
    return [figure for figure in PUBLISHED if figure.task == task]


def reference_lines(task: str, env_steps: Optional[int] = None) -> Dict[str, float]:
    """Figure labels -> returns, for a plot's reference lines (of one budget, or all)."""
    return {f"{figure.algorithm} {figure.env_steps // 1000}k ({figure.source.split(' (')[0]}) {figure.mean:.0f}":
            figure.mean for figure in for_task(task) if env_steps is None or figure.env_steps == env_steps}
