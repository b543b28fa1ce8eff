"""Shared by the actor and scaling benchmarks: run the acting part of the program, read its rates.

The program is the training program's replay, counter, actors and monitor, with a policy
server in the learner's place (`launch.program.make_acting_program`): actors step, act
with the default-size policy and insert n-step transitions as in training, but no
learner competes with them for the CPU and no rate limiter holds them back.
"""

import os
import statistics
import time

import numpy as np

import environments
from experiments import configs
from experiments.bench.env_bench import time_block


def raw_steps_per_s(task: str, seed: int, steps_per_block: int = 2000, blocks: int = 5) -> list:
    """Raw dm_control steps/s (random in-bound actions, auto-reset), one figure per block."""
    env = environments.load_task(task, seed)
    spec = env.action_spec()
    actions = np.random.default_rng(seed).uniform(spec.minimum, spec.maximum, (steps_per_block,) + spec.shape)
    env.reset()
    time_block(env, actions[:200])
    rates = [steps_per_block / time_block(env, actions) for _ in range(blocks)]
    env.close()
    return rates


def run_acting_program(task: str, num_actors: int, max_env_steps: int, run_dir: str, seed: int = 0,
                       envs_per_actor: int = 1, cluster_spec=None) -> dict:
    """Launches the acting program until `max_env_steps` (local_mp, or on the hosts of
    `cluster_spec`, a launch.cluster.ClusterSpec with a command template); returns its measured rates."""
    import environments
    from launch.rundir import metrics
    from launch.runtime import launcher
    from launch.program import make_acting_program

    config = configs.make_experiment_config(
        agent="mpo", task=task, run_dir=os.path.abspath(run_dir), seed=seed, num_actors=num_actors,
        max_env_steps=max_env_steps, envs_per_actor=envs_per_actor,
        overrides=["replay.samples_per_insert=none", "experiment.log_every_s=0.5",
                   "experiment.max_restarts_per_node=0"],  # a node that dies fails the measurement
    )
    os.makedirs(run_dir)
    start = time.time()
    code = launcher.run_processes(make_acting_program(config, environments.environment_spec(config.environment)),
                                  config, cluster_spec)
    wall_time = time.time() - start
    if code != 0:
        raise RuntimeError(f"The acting program in {run_dir} failed (exit code {code}); its node logs: "
                           f"{os.path.join(run_dir, 'logs')}")

    # Per actor, the actor's steps/s over each episode after its environments' first ones
    # (those include compilation and start-up).
    episode_rates = []
    for actor_id in range(num_actors):
        rows = metrics.read_rows(metrics.csv_path(run_dir, f"actor_{actor_id}"))
        episode_rates.append([row["steps_per_s"] for row in rows[envs_per_actor:]])
    # Total rate over the steady part: from 20% of the budget to the end.
    progress = [row for row in metrics.read_rows(metrics.csv_path(run_dir, "progress"))
                if row["env_steps"] >= 0.2 * max_env_steps]
    first, last = progress[0], progress[-1]
    total = (last["env_steps"] - first["env_steps"]) / (last["elapsed_s"] - first["elapsed_s"])
    return {
        "num_actors": num_actors,
        "envs_per_actor": envs_per_actor,
        "max_env_steps": max_env_steps,
        "wall_time_s": wall_time,
        "total_env_steps_per_s": total,
        "actor_episode_steps_per_s_median": [statistics.median(rates) for rates in episode_rates],
        "actor_episode_steps_per_s": episode_rates,
        "run_dir": run_dir,
    }
