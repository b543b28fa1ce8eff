"""Pixel replay: Reverb bytes per item and the sampler's CPU per batch, frames stored once vs
packed stacks; and what compressing recorded frames costs the recorder.

    python -m experiments.bench replay_frames --out experiments/results/replay_frames/<name>.json

For each frame size (--sizes; S = 3, n = 5) a Reverb server in a child process gets --items
items written from rendered cartpole:swingup frames (a pool of --pool consecutive frames,
cycled; episodes of --episode_steps steps) by one of:

    frames_chunkC  replay.FrameWriter, each frame once, chunks of C cells (--chunk_lengths;
                   replay.frame_writer.CHUNK_LENGTH is what ships)
    packed         each item its own chunks holding both its stacks, uint8: the naive alternative

Bytes per item, two observables: `checkpoint_bytes_per_item`, the server's checkpoint (one
record per chunk it holds, compressed as it holds them, plus the items' table entries) over
the items, i.e. the payload exactly; `rss_bytes_per_item`, the server process's resident
memory growth over the fill, over the items (payload plus Reverb's and the allocator's overhead).
Sampler CPU: this process's CPU time (time.process_time, tf.data's threads included) per batch
of --batch_size while iterating replay.make_dataset + replay.to_transition, median of blocks;
the server process's CPU over the same batches is reported beside it.
Recorder: replay.experience.ExperienceRecorder over rendered 64x64 frames, its time per step
as shipped, and the bytes per frame and save time per frame of its chunks with
np.savez_compressed and with np.savez.
"""

import argparse
import io
import multiprocessing
import os
import platform
import shutil
import statistics
import tempfile
import time
from typing import Dict, List

import dm_env
import numpy as np

STACK, N_STEP = 3, 5
TASK = "cartpole:swingup"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="64,84", help="frame sizes (square), comma-separated")
    parser.add_argument("--items", type=int, default=20_000, help="items written per variant")
    parser.add_argument("--chunk_lengths", default="1,4,8", help="FrameWriter chunk lengths compared (frames_chunkC)")
    parser.add_argument("--pool", type=int, default=120, help="rendered frames per size, cycled")
    parser.add_argument("--episode_steps", type=int, default=500)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--blocks", type=int, default=5, help="timed sampling blocks per variant")
    parser.add_argument("--batches_per_block", type=int, default=4)
    parser.add_argument("--record_steps", type=int, default=1000, help="steps through the recorder")
    parser.add_argument("--out", default=None, help="JSON path (default runs/bench/replay_frames-<time>.json)")


def _pixel_spec(size: int):
    from acme import specs

    return specs.EnvironmentSpec(
        observations=specs.Array((STACK, size, size, 3), np.uint8),
        actions=specs.BoundedArray((1,), np.float32, -1.0, 1.0),
        rewards=specs.Array((), np.float32), discounts=specs.BoundedArray((), np.float32, 0.0, 1.0))


def _serve(size: int, max_size: int, checkpoint_dir: str, connection) -> None:
    """The child process: a Reverb server with the online table of a pixel run, until told to stop."""
    import reverb

    import replay

    config = replay.ReplayConfig(max_size=max_size, min_size_to_sample=1, samples_per_insert=None)
    server = reverb.Server([replay.make_online_table(config, _pixel_spec(size))], port=None,
                           checkpointer=reverb.checkpointers.DefaultCheckpointer(path=checkpoint_dir))
    connection.send(server.port)
    connection.recv()
    server.stop()


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as file:
        return next(int(line.split()[1]) * 1024 for line in file if line.startswith("VmRSS:"))


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def render_frames(size: int, count: int) -> List[np.ndarray]:
    """`count` consecutive frames of a random-action cartpole:swingup episode, uint8 [size, size, 3]."""
    import environments

    env = environments.make_environment(environments.EnvironmentConfig(TASK, seed=0))
    rng = np.random.default_rng(0)
    env.reset()
    frames = []
    for _ in range(count):
        env.step(rng.uniform(-1, 1, (1,)).astype(np.float32))
        frames.append(env.render(size, size))
    env.close()
    return frames


class PackedStackWriter:
    """The naive alternative: each item one chunk holding its two stacks (uint8) and the small
    vector, as NStepWriter packs state items. Items of full n steps only (enough to measure)."""

    def __init__(self, client, table: str):
        from replay import reverb_internals
        from replay.writer import GET_SIGNATURE_TIMEOUT_MS

        self._table = table
        options = reverb_internals.chunker_options(max_chunk_length=1, num_keep_alive_refs=1)
        self._writer = reverb_internals.trajectory_writer(client, options, GET_SIGNATURE_TIMEOUT_MS)
        self._frames: List[np.ndarray] = []

    def add_first(self, timestep: dm_env.TimeStep, env: int = 0) -> None:
        self._frames = [timestep.observation] * STACK

    def add(self, action: np.ndarray, next_timestep: dm_env.TimeStep, env: int = 0) -> None:
        self._frames.append(next_timestep.observation)
        if len(self._frames) >= STACK + N_STEP:
            observation = np.stack(self._frames[-STACK - N_STEP:-N_STEP])
            next_observation = np.stack(self._frames[-STACK:])
            rest = np.concatenate([action, np.array([next_timestep.reward, 0.9], np.float32)], dtype=np.float32)
            refs = self._writer.Append([rest, next_observation, observation])
            self._writer.CreateItem(self._table, 1.0, [[ref] for ref in refs], [True, True, True])
            self._frames.pop(0)

    def end_unfinished_episode(self, env: int = 0) -> None:
        self._frames = []

    def flush(self, timeout_ms: int = -1) -> None:
        self._writer.Flush(0, timeout_ms)

    def close(self) -> None:
        self._writer.Close()


def _fill(writer, frames: List[np.ndarray], items: int, episode_steps: int, table_size) -> float:
    """Writes episodes of the cycled frames until the table holds `items`; returns the CPU seconds taken."""
    rng = np.random.default_rng(1)
    start, step = time.process_time(), 0
    while table_size() < items:
        writer.add_first(dm_env.restart(frames[step % len(frames)]))
        for t in range(episode_steps):
            step += 1
            frame = frames[step % len(frames)]
            action = rng.uniform(-1, 1, (1,)).astype(np.float32)
            writer.add(action, dm_env.transition(np.float32(0.5), frame) if t < episode_steps - 1
                       else dm_env.truncation(np.float32(0.5), frame))
            if step % 1000 == 0 and table_size() >= items:
                writer.end_unfinished_episode()
                break
        writer.flush()
    writer.close()
    return time.process_time() - start


def measure_variant(size: int, variant: str, frames: List[np.ndarray], args) -> Dict[str, float]:
    import reverb

    import replay

    checkpoint_dir = tempfile.mkdtemp(prefix="replay_frames_checkpoint_")
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(size, 2 * args.items, checkpoint_dir, child), daemon=True)
    process.start()
    try:
        port = parent.recv()
        address = f"localhost:{port}"
        client = reverb.Client(address)
        layout = replay.layout_of(_pixel_spec(size))
        table_size = lambda: client.server_info()[replay.ONLINE_TABLE].current_size  # noqa: E731
        if variant == "packed":
            writer = PackedStackWriter(client, replay.ONLINE_TABLE)
        else:
            writer = replay.FrameWriter(client, replay.ONLINE_TABLE, N_STEP, 0.99, frame_stack=STACK,
                                        chunk_length=int(variant[len("frames_chunk"):]))
        rss_before = _rss_bytes(process.pid)
        writer_cpu = _fill(writer, frames, args.items, args.episode_steps, table_size)
        items = table_size()
        rss_growth = _rss_bytes(process.pid) - rss_before
        checkpoint = client.checkpoint()
        checkpoint_bytes = sum(os.path.getsize(os.path.join(checkpoint, name)) for name in os.listdir(checkpoint))

        config = replay.ReplayConfig(min_size_to_sample=1, samples_per_insert=None, batch_size=args.batch_size)
        batches = replay.transitions(replay.make_dataset(address, config, layout))
        for _ in range(3):  # tf.data's pipeline and Reverb's sampler started and full
            batch = next(batches)
        assert batch.observation.dtype == np.uint8 and batch.observation.shape[1:] == (STACK, size, size, 3)
        sampler, server = [], []
        for _ in range(args.blocks):
            start, server_start = time.process_time(), _cpu_seconds(process.pid)
            for _ in range(args.batches_per_block):
                next(batches)
            sampler.append((time.process_time() - start) / args.batches_per_block)
            server.append((_cpu_seconds(process.pid) - server_start) / args.batches_per_block)
        batches.close()
        return {
            "items": items,
            "checkpoint_bytes_per_item": checkpoint_bytes / items,
            "rss_bytes_per_item": rss_growth / items,
            "writer_cpu_us_per_item": 1e6 * writer_cpu / items,
            "sampler_cpu_s_per_batch_median": statistics.median(sampler),
            "server_cpu_s_per_batch_median": statistics.median(server),
            "sampler_cpu_s_per_batch": sampler,
        }
    finally:
        parent.send("stop")
        process.join(timeout=30)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)


def measure_recorder(frames: List[np.ndarray], steps: int) -> Dict[str, float]:
    """The recorder as shipped over `steps` steps of 64x64 frames, then its chunks saved both ways."""
    from replay import experience

    run_dir = tempfile.mkdtemp(prefix="replay_frames_record_")
    try:
        size = frames[0].shape[0]
        experience.write_spec(run_dir, TASK, _pixel_spec(size))
        recorder = experience.ExperienceRecorder(run_dir, 0, chunk_steps=100, flush_every_s=1e9)
        action = np.zeros((1,), np.float32)
        start = time.perf_counter()
        recorder.add_first(dm_env.restart(frames[0]))
        for step in range(1, steps):
            recorder.add(action, dm_env.transition(np.float32(0.5), frames[step % len(frames)]))
        recorder.close()
        shipped = (time.perf_counter() - start) / steps
        chunks = [dict(np.load(path)) for path in sorted(
            os.path.join(directory, name) for directory in experience.actor_directories(run_dir)
            for name in os.listdir(directory))]
        stored = sum(len(chunk["step_type"]) for chunk in chunks)
        result = {"frame_size": size, "steps": stored, "recorder_s_per_step_as_shipped": shipped}
        for name, save in (("savez_compressed", np.savez_compressed), ("savez", np.savez)):
            seconds, size_bytes = 0.0, 0
            for chunk in chunks:
                data = io.BytesIO()
                start = time.perf_counter()
                save(data, **chunk)
                seconds += time.perf_counter() - start
                size_bytes += len(data.getbuffer())
            result[f"{name}_bytes_per_frame"] = size_bytes / stored
            result[f"{name}_s_per_step"] = seconds / stored
        return result
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    from experiments import results_io

    started = time.perf_counter()
    sizes = [int(size) for size in args.sizes.split(",")]
    from replay import frame_writer

    variants = [f"frames_chunk{c}" for c in args.chunk_lengths.split(",") if c] + ["packed"]
    result = {"benchmark": "replay_frames", "task": TASK, "frame_stack": STACK, "n_step": N_STEP,
              "shipped_chunk_length": frame_writer.CHUNK_LENGTH,
              "batch_size": args.batch_size, "episode_steps": args.episode_steps, "rendered_pool": args.pool,
              "bytes_observables": "checkpoint: chunks.tfrecord + tables.tfrecord of client.checkpoint(); "
                                   "rss: server child process VmRSS growth over the fill",
              "sizes": {}}
    render_s = {}
    for size in sizes:
        start = time.perf_counter()
        frames = render_frames(size, args.pool)
        render_s[size] = (time.perf_counter() - start) / args.pool
        result["sizes"][f"{size}x{size}"] = {variant: measure_variant(size, variant, frames, args)
                                             for variant in variants}
        if size == 64:
            result["recorder"] = measure_recorder(frames, args.record_steps)
        for variant, figures in result["sizes"][f"{size}x{size}"].items():
            print(f"{size}x{size} {variant:14s} {figures['checkpoint_bytes_per_item']:9.0f} B/item (checkpoint) "
                  f"{figures['rss_bytes_per_item']:9.0f} B/item (server RSS)  sampler "
                  f"{figures['sampler_cpu_s_per_batch_median']:.4f} CPU s/batch, server "
                  f"{figures['server_cpu_s_per_batch_median']:.4f}; writer {figures['writer_cpu_us_per_item']:.0f} "
                  "CPU us/item", flush=True)
    result["render_s_per_frame"] = {f"{size}x{size}": seconds for size, seconds in render_s.items()}
    if "recorder" in result:
        recorder = result["recorder"]
        print(f"recorder 64x64: {1e3 * recorder['recorder_s_per_step_as_shipped']:.3f} ms/step as shipped; "
              f"{recorder['savez_compressed_bytes_per_frame']:.0f} B/frame compressed "
              f"({1e3 * recorder['savez_compressed_s_per_step']:.3f} ms/step to save) vs "
              f"{recorder['savez_bytes_per_frame']:.0f} B/frame plain "
              f"({1e3 * recorder['savez_s_per_step']:.3f} ms/step)")
    result["machine"] = {"cpu_model": results_io.cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                         "node": platform.node()}
    result["items_per_variant"] = args.items
    result["wall_s"] = time.perf_counter() - started
    result["time_utc"] = results_io.timestamp()
    path = results_io.write_json_exclusive(result, results_io.bench_output_path("replay_frames", args.out))
    print(f"wrote {path} ({result['wall_s']:.0f} s)")
    return 0
