"""summary.json: what a finished (or stopped) run did, from the counter's totals (the counter node writes it)."""

from typing import Optional

from launch.rundir import metrics
from launch.rundir.jsonio import write_json
from launch.rundir.paths import RunPaths


def evaluations(run_dir: str) -> list:
    """The evaluator's complete rows so far (env_steps, learner_step, mean_return, ...) as dicts of floats."""
    return metrics.read_rows(metrics.csv_path(run_dir, "evaluator"))


def write_summary(config, counts: dict, counts_before: dict, wall_time_s: float, restarts: Optional[list] = None,
                  stop_reason: Optional[str] = None) -> dict:
    """summary.json from the counter's totals at the stop. `counts_before`: the totals a resumed
    launch started from (they count in the totals; wall time, rates and episodes are this launch's).
    Evaluations are the evaluator's rows, all launches together."""
    env_steps = int(counts.get("actor_steps", 0))
    env_steps_before = int(counts_before.get("actor_steps", 0))
    learner_steps = int(counts.get("learner_steps", 0))
    learner_steps_before = int(counts_before.get("learner_steps", 0))
    rows = evaluations(config.run_dir)
    result = {
        "env_steps": env_steps,
        "episodes": int(counts.get("actor_episodes", 0) - counts_before.get("actor_episodes", 0)),
        "learner_steps": learner_steps,
        "wall_time_s": round(wall_time_s, 3),
        "env_steps_per_s": (env_steps - env_steps_before) / wall_time_s if wall_time_s > 0 else None,
        "learner_steps_per_s": (learner_steps - learner_steps_before) / wall_time_s if wall_time_s > 0 else None,
        "resumed_at": ({"env_steps": env_steps_before, "learner_steps": learner_steps_before}
                       if config.resume is not None else None),
        "evaluations": len(rows),
        "final_eval_return": rows[-1]["mean_return"] if rows else None,
        "best_eval_return": max(row["mean_return"] for row in rows) if rows else None,
        "reached_max_env_steps": env_steps >= config.max_env_steps,
        "stop_reason": stop_reason,
        # Node processes restarted by their supervisors (restarts.jsonl has each one).
        "restarts": [{key: record[key] for key in ("node", "cause", "restarted")} for record in restarts or []],
    }
    write_json(RunPaths(config.run_dir).summary, result)
    return result
