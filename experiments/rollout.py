"""Steps a task with a uniform random policy and reports episode returns.

    python -m experiments.rollout [--env=cartpole:swingup --episodes=5 --seed=0 --run_dir=...]

The real environment stack, end to end, with the simplest policy there is. The
return of a random policy is the baseline that learning results are compared with.
"""

import argparse
import pathlib
import sys
import time

import numpy as np

import environments
from experiments import results_io


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m experiments.rollout", description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="cartpole:swingup", help="task, 'domain:task'")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--action_repeat", type=int, default=1)
    parser.add_argument("--run_dir", default=None, help="default runs/rollout/<task>/<UTC time>")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    return args


def random_rollout(config: environments.EnvironmentConfig, episodes: int, seed: int):
    """Returns (episode returns, episode lengths, env steps per second)."""
    from launch.loops.episodes import EpisodeRunner, uniform_random_policy

    env = environments.make_environment(config)
    start = time.perf_counter()
    try:
        played = EpisodeRunner(env, uniform_random_policy(env.action_spec(), seed)).run(episodes)
    finally:
        env.close()
    seconds = time.perf_counter() - start
    lengths = [episode.steps for episode in played]
    return [episode.total_return for episode in played], lengths, sum(lengths) / seconds


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        config = environments.EnvironmentConfig(args.env, seed=args.seed, action_repeat=args.action_repeat)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run_dir = pathlib.Path(args.run_dir or pathlib.Path("runs", "rollout", args.env.replace(":", "_"), results_io.timestamp()))
    print(f"Random policy on {args.env} (seed {args.seed}), {args.episodes} episodes.")
    returns, lengths, steps_per_s = random_rollout(config, args.episodes, args.seed)
    for episode, (episode_return, length) in enumerate(zip(returns, lengths)):
        print(f"  episode {episode}: return {episode_return:8.2f} over {length} steps")
    summary = {
        "task": args.env,
        "seed": args.seed,
        "policy": "uniform random",
        "episodes": args.episodes,
        "episode_returns": returns,
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "env_steps": int(sum(lengths)),
        "env_steps_per_s": steps_per_s,
        "config": {"action_repeat": config.action_repeat, "max_episode_steps": config.max_episode_steps},
    }
    path = results_io.write_json_exclusive(summary, run_dir / "summary.json")
    print(f"mean return {summary['mean_return']:.2f} ± {summary['std_return']:.2f}; {steps_per_s:.0f} env steps/s")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
