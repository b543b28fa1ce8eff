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


def evaluations(run_dir: str) -> list:
    """The evaluator's complete rows so far (env_steps, learner_step, mean_return, ...) as dicts of floats."""
    return metrics.read_rows(metrics.csv_path(run_dir, "evaluator"))


def write_summary(run_dir: str, wall_time_s: float) -> dict:
    # Actors write their own totals on exit; counts.json exists only if the step limit was reached.
    actors = [read_json(path) or {} for path in sorted(glob.glob(os.path.join(run_dir, "actor_*.json")))]
    env_steps = sum(actor.get("actor_steps", 0) for actor in actors)
    episodes = sum(len(actor.get("episode_returns", [])) for actor in actors)
    learner = read_json(os.path.join(run_dir, "learner.json")) or {}
    learner_steps = learner.get("learner_steps", 0)
    rows = evaluations(run_dir)
    summary = {
        "env_steps": env_steps,
        "episodes": episodes,
        "learner_steps": learner_steps,
        "wall_time_s": round(wall_time_s, 3),
        "env_steps_per_s": env_steps / wall_time_s if wall_time_s > 0 else None,
        "learner_steps_per_s": learner_steps / wall_time_s if wall_time_s > 0 else None,
        "evaluations": len(rows),
        "final_eval_return": rows[-1]["mean_return"] if rows else None,
        "best_eval_return": max(row["mean_return"] for row in rows) if rows else None,
        "reached_max_env_steps": os.path.exists(os.path.join(run_dir, "counts.json")),
    }
    with open(os.path.join(run_dir, "summary.json"), "w") as file:
        json.dump(summary, file, indent=2, sort_keys=True)
    return summary
