"""summary.json: what a finished (or stopped) run did, assembled from what its nodes wrote."""

import glob
import json
import os
from typing import Optional

from launch import metrics


def read_json(path: str) -> Optional[dict]:
    """The JSON at `path`, or None if it is missing or (being written) not valid yet."""
    try:
        with open(path) as file:
            return json.load(file)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_json(path: str, data) -> None:
    """Writes `path` atomically: a reader never sees half a file."""
    with open(path + ".tmp", "w") as file:
        json.dump(data, file, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def evaluations(run_dir: str) -> list:
    """The evaluator's complete rows so far (env_steps, learner_step, mean_return, ...) as dicts of floats."""
    return metrics.read_rows(metrics.csv_path(run_dir, "evaluator"))


def _reached_max_env_steps(run_dir: str) -> bool:
    # The monitor writes counts.json at the limit; a resumed run may have a higher limit now.
    counts = read_json(os.path.join(run_dir, "counts.json")) or {}
    limit = (read_json(os.path.join(run_dir, "config.json")) or {}).get("max_env_steps", float("inf"))
    return counts.get("actor_steps", 0) >= limit


def write_summary(run_dir: str, wall_time_s: float, resume=None) -> dict:
    """`resume`: the ResumeConfig of a resumed launch. Its steps before this launch count in the
    totals; wall time, rates and episodes are this launch's."""
    # Actors write their own totals on exit; counts.json exists only if the step limit was reached.
    actors = [read_json(path) or {} for path in sorted(glob.glob(os.path.join(run_dir, "actor_*.json")))]
    env_steps_before = int(resume.count("actor_steps")) if resume is not None else 0
    launch_env_steps = sum(actor.get("actor_steps", 0) for actor in actors)
    env_steps = env_steps_before + launch_env_steps
    episodes = sum(len(actor.get("episode_returns", [])) for actor in actors)
    learner = read_json(os.path.join(run_dir, "learner.json")) or {}
    learner_steps = learner.get("learner_steps", 0)  # the learner counts on from a restored checkpoint
    learner_steps_before = int(resume.count("learner_steps")) if resume is not None else 0
    rows = evaluations(run_dir)
    summary = {
        "env_steps": env_steps,
        "episodes": episodes,
        "learner_steps": learner_steps,
        "wall_time_s": round(wall_time_s, 3),
        "env_steps_per_s": launch_env_steps / wall_time_s if wall_time_s > 0 else None,
        "learner_steps_per_s": (learner_steps - learner_steps_before) / wall_time_s if wall_time_s > 0 else None,
        "resumed_at": {"env_steps": env_steps_before, "learner_steps": learner_steps_before} if resume is not None else None,
        "evaluations": len(rows),
        "final_eval_return": rows[-1]["mean_return"] if rows else None,
        "best_eval_return": max(row["mean_return"] for row in rows) if rows else None,
        "reached_max_env_steps": _reached_max_env_steps(run_dir),
    }
    with open(os.path.join(run_dir, "summary.json"), "w") as file:
        json.dump(summary, file, indent=2, sort_keys=True)
    return summary
