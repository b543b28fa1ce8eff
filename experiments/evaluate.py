"""Evaluates any run's policy from its checkpoints: greedy returns, and a video if asked.

    python -m experiments.evaluate --run=RUN_DIR [--checkpoint=latest|STEP|PATH] [--episodes=10]
        [--seed=0] [--video=policy.gif|policy.mp4] [--video_episodes=1]

Reads the run's config.json (task, network sizes) and one checkpoint; writes nothing
into the run. Runs on the CPU whatever device wrote the checkpoint. Videos render
offscreen with MuJoCo (MUJOCO_GL, see BUILD.md); .gif is written by Pillow, .mp4 (H.264)
by the ffmpeg binary that the imageio-ffmpeg wheel ships: nothing to install beyond `make setup`.
"""

import argparse
import dataclasses
import os
import subprocess
import sys
from typing import List, Optional

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

VIDEO_FORMATS = (".gif", ".mp4")


def load_run(run_dir: str, checkpoint: str = "latest"):
    """(ExperimentConfig, Checkpoint) of a run; --checkpoint is 'latest', a learner step or a directory."""
    from launch.rundir import checkpoints
    from launch.rundir.run_config import read_config

    config = read_config(run_dir, flag="--run")
    if checkpoint == "latest":
        loaded, _ = checkpoints.load_latest(run_dir)
    elif checkpoint.isdigit():
        loaded, _ = checkpoints.load_latest(run_dir, step=int(checkpoint))
    else:
        loaded = checkpoints.load(checkpoint)
    return config, loaded


def evaluate(config, state: dict, episodes: int, seed: int, video_episodes: int = 0, video_size=(240, 320),
             video_fps: float = 30.0, camera_id: int = 0):
    """Greedy returns of `episodes` episodes, and the frames of the first `video_episodes` of them.
    `state`: a checkpoint's learner state (its networks' params)."""
    import agents
    import environments
    from launch.loops.episodes import EpisodeRunner, Filmer

    env = environments.make_environment(dataclasses.replace(config.environment, seed=seed))
    networks = agents.Networks(config.learner, env.action_spec().shape[0], env.observation_spec().shape)
    acting_params = agents.params_on_cpu(networks.acting_params(state["policy_params"], state["critic_params"]))
    _, greedy_action = agents.make_policy_fns(networks)
    policy = lambda observation: np.asarray(greedy_action(acting_params, observation))  # noqa: E731
    # Every stride-th step is filmed, so the video plays at about real time.
    stride = max(1, int(round(1.0 / (video_fps * env.control_timestep))))
    fps = 1.0 / (stride * env.control_timestep)
    filmer, filmed = Filmer(env, stride, video_size, camera_id), min(video_episodes, episodes)
    try:
        played = EpisodeRunner(env, policy, [filmer]).run(filmed) + EpisodeRunner(env, policy).run(episodes - filmed)
    finally:
        env.close()
    return [episode.total_return for episode in played], filmer.frames, fps


def write_video(frames: List[np.ndarray], path: str, fps: float) -> None:
    """Frames (uint8 [H, W, 3]) to a .gif (Pillow) or an .mp4 (H.264, yuv420p: plays in browsers and players)."""
    if path.endswith(".gif"):
        from PIL import Image

        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)
        return
    height, width, _ = frames[0].shape
    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
               "-r", f"{fps:.3f}", "-i", "-", "-pix_fmt", "yuv420p", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", path]
    subprocess.run(command, input=np.stack(frames).tobytes(), check=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run directory")
    parser.add_argument("--checkpoint", default="latest", help="'latest', a learner step, or a checkpoint directory")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="environment seed of the first episode")
    parser.add_argument("--video", default=None, help="write the greedy policy to this .gif or .mp4")
    parser.add_argument("--video_episodes", type=int, default=1, help="episodes filmed (the first ones)")
    parser.add_argument("--video_size", default="240,320", help="height,width in pixels")
    parser.add_argument("--camera", type=int, default=0, help="MuJoCo camera id")
    args = parser.parse_args(argv)
    from launch.rundir import checkpoints

    try:
        if args.episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {args.episodes}.")
        if args.video is not None:
            if not args.video.endswith(VIDEO_FORMATS):
                raise ValueError(f"--video={args.video}: use a file name ending in {' or '.join(VIDEO_FORMATS)}.")
        height, width = (int(part) for part in args.video_size.split(","))
        config, checkpoint = checkpoints.reporting_skips(load_run, args.run, args.checkpoint)
    except ValueError as error:  # checkpoints.CheckpointError included
        print(f"error: {error}", file=sys.stderr)
        return 2

    meta = checkpoint.meta
    print(f"{meta.get('agent')} on {config.environment.task}, checkpoint {checkpoint.path} "
          f"(learner step {checkpoint.step}, env steps {meta['counts'].get('actor_steps', 0):,.0f}, saved {meta.get('saved_at_utc')})")
    returns, frames, fps = evaluate(config, checkpoint.state, args.episodes, args.seed,
                                    video_episodes=args.video_episodes if args.video else 0, video_size=(height, width),
                                    camera_id=args.camera)
    for episode, episode_return in enumerate(returns):
        print(f"episode {episode}: return {episode_return:.1f}")
    print(f"mean return {np.mean(returns):.1f} ± {np.std(returns):.1f} (std) over {len(returns)} episodes")
    if args.video:
        write_video(frames, args.video, fps)
        print(f"video: {args.video} ({len(frames)} frames at {fps:.0f} fps, {os.path.getsize(args.video):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
