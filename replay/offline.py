"""Earlier runs' recorded experience as n-step transitions in an offline table (RaE).

`select_experience` reads runs' `experience/` (replay.experience), checks them against
the new run's spec, and keeps what the selection asks for; `write_offline` rebuilds
n-step transitions with the new run's own n and discount, through the same writer
the actors use, so offline items are exactly what an actor would have inserted. A pixel
run's recorded frames are restacked by the writer with the new run's own frame stack.
"""

import dataclasses
import glob
import os
from typing import Dict, List, Optional, Sequence

import dm_env
import numpy as np
import reverb
from acme import specs

from replay import experience
from replay.config import ReplayConfig
from replay.layouts import Layout, make_writer

OFFLINE_TABLE = "offline"


@dataclasses.dataclass
class RunExperience:
    run_dir: str
    episodes: List[dict]  # replay.experience episode dicts, oldest first
    skipped_files: List[str]

    @property
    def steps(self) -> int:
        """Transitions: one per recorded step whose next timestep is recorded too."""
        return sum(_transitions(e) for e in self.episodes)


def resolve_runs(patterns: Sequence[str]) -> List[str]:
    """Run directories from paths or globs; each must hold recorded experience."""
    runs = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = [m for m in sorted(glob.glob(pattern)) if os.path.isdir(experience.experience_dir(m))]
            if not matches:
                raise ValueError(f"--rae_from: {pattern!r} matches no run directory with recorded experience.")
        elif os.path.isdir(experience.experience_dir(pattern)):
            matches = [pattern]
        else:
            raise ValueError(f"--rae_from: {pattern} has no experience/ directory: it is not a Relay run "
                             "that recorded its steps (experiment.record_experience).")
        runs += [os.path.abspath(m) for m in matches if os.path.abspath(m) not in runs]
    return runs


def check_compatible(run_dir: str, task: str, spec: specs.EnvironmentSpec) -> dict:
    """The run's experience spec; raises naming both sides if it cannot feed a run of `task` with
    environment spec `spec`. A pixel run's stored frame is compared, not its stack: frame
    stacks may differ (the writer restacks)."""
    recorded = experience.read_spec(run_dir)
    stored = experience.stored_observation(spec)
    theirs = (recorded["task"], tuple(recorded["observation_shape"]), recorded["observation_dtype"],
              tuple(recorded["action_shape"]))
    ours = (task, tuple(stored["observation_shape"]), stored["observation_dtype"], tuple(spec.actions.shape))
    if theirs != ours:
        raise ValueError(
            f"--rae_from: {run_dir} recorded task {theirs[0]} with observations {list(theirs[1])} {theirs[2]} and "
            f"actions {list(theirs[3])}; this run is task {ours[0]} with observations {list(ours[1])} {ours[2]} and "
            f"actions {list(ours[3])}. Only runs of the same task, observation shape and dtype, and action shape "
            "can be replayed.")
    return recorded


def _transitions(episode: dict) -> int:
    return len(episode["step_type"]) - 1


def _episode_return(episode: dict) -> float:
    return float(np.sum(episode["reward"]))


def select_experience(run_dir: str, max_steps: Optional[int] = None, min_return: Optional[float] = None,
                      skip_corrupt: bool = False) -> RunExperience:
    """One run's episodes (all actors): those with return >= min_return, then the most recent max_steps steps.

    An unreadable chunk raises ValueError naming it, unless skip_corrupt: then it is
    listed as skipped, the episode it cuts is dropped, and the rest is read.
    "Most recent" follows chunk order within each actor; actors are interleaved by
    their episode index, so each actor keeps its latest episodes.
    """
    per_actor, skipped = [], []
    for actor_dir in experience.actor_directories(run_dir):
        try:
            per_actor.append(list(experience.read_episodes(actor_dir, skipped if skip_corrupt else None)))
        except experience.CorruptChunkError as error:
            raise ValueError(f"{error} Pass --rae_skip_corrupt to load the readable rest.") from None
    # Oldest first across actors: the i-th episodes of all actors before the (i+1)-th.
    episodes = [actor[i] for i in range(max((len(actor) for actor in per_actor), default=0))
                for actor in per_actor if i < len(actor)]
    if min_return is not None:
        # An episode cut short by the end of recording has no full return to judge: it is left out.
        episodes = [e for e in episodes if e["step_type"][-1] == dm_env.StepType.LAST and _episode_return(e) >= min_return]
    if max_steps is not None:
        kept, total = [], 0
        for episode in reversed(episodes):
            if total >= max_steps:
                break
            kept.append(episode)
            total += _transitions(episode)
        episodes = kept[::-1]
    return RunExperience(run_dir=run_dir, episodes=episodes, skipped_files=skipped)


def write_offline(client: reverb.Client, runs: Sequence[RunExperience], config: ReplayConfig,
                  table: str = OFFLINE_TABLE, layout: Optional[Layout] = None) -> int:
    """Inserts every selected step's n-step transition into `table`, written as this run's actors
    write theirs (`layout`: `replay.layout_of` of this run's spec; None: a state run); returns
    the number of items."""
    items = 0
    writer = make_writer(client, config, table, layout=layout)
    for run in runs:
        for episode in run.episodes:
            writer.add_first(dm_env.restart(episode["observation"][0]))
            for t in range(1, len(episode["step_type"])):
                writer.add(episode["action"][t - 1], dm_env.TimeStep(
                    step_type=dm_env.StepType(int(episode["step_type"][t])), reward=episode["reward"][t],
                    discount=episode["discount"][t], observation=episode["observation"][t]))
            # An episode cut short by the end of its recording: its last steps bootstrap
            # from the last observation recorded, with fewer than n rewards.
            writer.end_unfinished_episode()
            items += _transitions(episode)
    writer.flush()
    writer.close()
    return items


def summarize(runs: Sequence[RunExperience]) -> Dict[str, float]:
    episodes = [e for run in runs for e in run.episodes]
    finished = [_episode_return(e) for e in episodes if e["step_type"][-1] == dm_env.StepType.LAST]
    return {
        "runs": len(runs),
        "episodes": len(episodes),
        "steps": sum(run.steps for run in runs),
        "mean_return": float(np.mean(finished)) if finished else float("nan"),
        "skipped_files": [path for run in runs for path in run.skipped_files],
    }
