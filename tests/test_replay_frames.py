"""Replay of pixel runs on a real Reverb server: frame stacks and n-step values, exactly; each frame stored once."""

import collections
import os

import dm_env
import numpy as np
import pytest
import reverb
import tensorflow as tf
from acme import specs
from reverb.cc import schema_pb2

import replay
from replay import ReplayConfig, frame_writer, reverb_internals

STACK, N_STEP, GAMMA, SIZE, ACTIONS = 3, 3, 0.9, 8, 2
QUEUE = "queue"


def pixel_spec(stack: int = STACK, size: int = SIZE, action_dim: int = ACTIONS) -> specs.EnvironmentSpec:
    """A pixel run's environment spec: stacks of `stack` frames uint8 [size, size, 3]."""
    return specs.EnvironmentSpec(
        observations=specs.Array((stack, size, size, 3), np.uint8),
        actions=specs.BoundedArray((action_dim,), np.float32, -1.0, 1.0),
        rewards=specs.Array((), np.float32), discounts=specs.BoundedArray((), np.float32, 0.0, 1.0))


def frame(code: int, size: int = SIZE) -> np.ndarray:
    """A synthetic frame with its code painted in every pixel, one code per (environment, episode, step)."""
    return np.full((size, size, 3), code, np.uint8)


# Per environment, its episodes in order: (steps, how it ends). Env 0: one longer than
# n + S, then one shorter than n ending terminal. Env 1: one shorter than n + S cut without
# a LAST step (end_unfinished_episode), then one truncated.
EPISODES = {0: [(10, "truncation"), (2, "termination")], 1: [(4, "unfinished"), (7, "truncation")]}


def script(episodes=EPISODES):
    """The episodes as the recorded steps of each (env, episode): frame codes [T + 1], rewards [T]
    (of steps 1..T), discounts [T], how it ends. Codes: 100 env + 20 episode + step."""
    recorded = {}
    for env, runs in episodes.items():
        for index, (steps, end) in enumerate(runs):
            codes = [100 * env + 20 * index + t for t in range(steps + 1)]
            rewards = [code / 10.0 for code in codes[1:]]
            # A mid-episode discount below 1 (step 3), and 0 at a terminal last step.
            discounts = [0.5 if t == 3 and t < steps else 1.0 for t in range(1, steps + 1)]
            if end == "termination":
                discounts[-1] = 0.0
            recorded[(env, index)] = (codes, rewards, discounts, end)
    return recorded


def drive(writer, episodes=EPISODES) -> None:
    """Feeds the scripted episodes to `writer` (add_first / add as an actor does), the
    environments interleaved step by step. The action of step t is [frame code of s_t, env]."""
    recorded = script(episodes)
    queues = {env: [recorded[(env, i)] for i in range(len(runs))] for env, runs in episodes.items()}
    position = {env: None for env in episodes}  # step index within the current episode
    while any(queues.values()) or any(p is not None for p in position.values()):
        for env in episodes:
            if position[env] is None:
                if not queues[env]:
                    continue
                codes = queues[env][0][0]
                writer.add_first(dm_env.restart(frame(codes[0])), env)
                position[env] = 0
                continue
            codes, rewards, discounts, end = queues[env][0]
            t = position[env]
            steps = len(rewards)
            last = t + 1 == steps
            step_type = dm_env.StepType.LAST if last and end != "unfinished" else dm_env.StepType.MID
            timestep = dm_env.TimeStep(step_type, np.float32(rewards[t]), np.float32(discounts[t]), frame(codes[t + 1]))
            writer.add(np.array([codes[t], env], np.float32), timestep, env)
            position[env] = t + 1
            if last:
                if end == "unfinished":
                    writer.end_unfinished_episode(env)
                queues[env].pop(0)
                position[env] = None


def expected_items(episodes=EPISODES, n_step=N_STEP, stack=STACK, discount=GAMMA) -> dict:
    """Frame code of s_t -> (observation codes, reward, bootstrap, next observation codes), worked
    out from the script: stacks of frames max(0, t-S+1+j), k = min(n, T - t)."""
    items = {}
    for codes, rewards, discounts, _ in script(episodes).values():
        steps = len(rewards)
        for t in range(steps):
            k = min(n_step, steps - t)
            n_step_return = sum(discount**i * np.prod(discounts[t:t + i]) * rewards[t + i] for i in range(k))
            bootstrap = discount**k * np.prod(discounts[t:t + k])
            observation = [codes[max(0, t - stack + 1 + j)] for j in range(stack)]
            next_observation = [codes[max(0, t + k - stack + 1 + j)] for j in range(stack)]
            items[codes[t]] = (observation, n_step_return, bootstrap, next_observation)
    return items


def stored_frames(episodes=EPISODES, stack=STACK) -> int:
    """Frames the frame writer sends: each episode's T + 1 frames and S - 1 copies of its first."""
    return sum(steps + 1 + stack - 1 for runs in episodes.values() for steps, _ in runs)


def read_all(address: str, layout, table: str, count: int):
    """Every item of a queue table, as one learner batch."""
    config = ReplayConfig(min_size_to_sample=1, samples_per_insert=None, batch_size=count, n_step=N_STEP)
    dataset = replay.make_dataset(address, config, layout, table=table, rate_limiter_timeout_ms=5_000)
    return next(replay.transitions(dataset))


def assert_items_are(batch, expected: dict) -> list:
    """Each item of `batch` is the expected one for its step; returns their steps' frame codes."""
    assert batch.observation.dtype == np.uint8 and batch.next_observation.dtype == np.uint8
    assert batch.observation.shape[1:] == (STACK, SIZE, SIZE, 3)
    assert batch.reward.dtype == np.float32 and batch.action.dtype == np.float32
    seen = []
    for observation, action, reward, discount, next_observation in zip(
            batch.observation, batch.action, batch.reward, batch.discount, batch.next_observation):
        code = int(action[0])
        stack, n_step_return, bootstrap, next_stack = expected[code]
        np.testing.assert_array_equal(observation, np.stack([frame(c) for c in stack]))
        np.testing.assert_array_equal(next_observation, np.stack([frame(c) for c in next_stack]))
        assert reward == pytest.approx(n_step_return, rel=1e-6)
        assert discount == pytest.approx(bootstrap, rel=1e-6)
        assert int(action[1]) == code // 100  # its environment
        seen.append(code)
    return seen


@pytest.fixture
def pixel_server(tmp_path):
    """A queue table with a pixel run's signature, on a server that can checkpoint into tmp_path."""
    layout = replay.layout_of(pixel_spec())
    server = reverb.Server([reverb.Table.queue(QUEUE, 1000, signature=layout.signature())], port=None,
                           checkpointer=reverb.checkpointers.DefaultCheckpointer(path=str(tmp_path / "checkpoint")))
    yield layout, server, reverb.Client(f"localhost:{server.port}")
    server.stop()


def test_layout_of_tells_state_from_frames_and_refuses_the_rest():
    state = specs.EnvironmentSpec(observations=specs.Array((5,), np.float32), actions=pixel_spec().actions,
                                  rewards=specs.Array((), np.float32), discounts=pixel_spec().discounts)
    assert replay.layout_of(state) == replay.TransitionLayout(observation_dim=5, action_dim=ACTIONS)
    layout = replay.layout_of(pixel_spec())
    assert layout == replay.FrameLayout(frame_shape=(SIZE, SIZE, 3), frame_stack=STACK, action_dim=ACTIONS)
    # Items list their columns in the order Reverb flattens the signature.
    assert tf.nest.flatten({name: name for name in layout.signature()}) == list(frame_writer.ITEM_COLUMNS)
    both = state._replace(observations={"pixels": pixel_spec().observations, "state": state.observations})
    with pytest.raises(ValueError, match="PixelConfig.include_state is for inspection; training takes pixels or "
                                         "state, not both"):
        replay.layout_of(both)
    with pytest.raises(ValueError, match=r"got float64 \[5\]"):
        replay.layout_of(state._replace(observations=specs.Array((5,), np.float64)))
    with pytest.raises(ValueError, match=r"got uint8 \[8, 8, 3\]"):
        replay.layout_of(state._replace(observations=specs.Array((8, 8, 3), np.uint8)))


@pytest.mark.parametrize("chunk_length", [frame_writer.CHUNK_LENGTH, 1, 16])
def test_every_item_holds_the_stacks_and_n_step_values_worked_out_from_the_frames(pixel_server, chunk_length):
    """Chunks of one cell, of the shipped length, and longer than any episode here."""
    layout, server, client = pixel_server
    writer = replay.FrameWriter(client, QUEUE, N_STEP, GAMMA, num_envs=2, frame_stack=STACK, chunk_length=chunk_length)
    drive(writer)
    writer.flush()
    writer.close()
    expected = expected_items()
    assert len(expected) == 10 + 2 + 4 + 7
    assert client.server_info()[QUEUE].current_size == len(expected)
    seen = assert_items_are(read_all(f"localhost:{server.port}", layout, QUEUE, len(expected)), expected)
    assert sorted(seen) == sorted(expected)  # each once


def test_each_frame_is_stored_once(pixel_server):
    """What the server holds, read from its checkpoint (one record per chunk it keeps): the
    frames sent, each once, and one small vector per item; packing each item's stacks would
    store 2S = 6 frames an item."""
    layout, _, client = pixel_server
    writer = replay.make_writer(client, ReplayConfig(n_step=N_STEP, discount=GAMMA), QUEUE, num_envs=2, layout=layout)
    drive(writer)
    writer.flush()
    writer.close()
    items = client.server_info()[QUEUE].current_size
    rows, keys = collections.Counter(), set()
    for record in tf.data.TFRecordDataset(os.path.join(client.checkpoint(), "chunks.tfrecord")).as_numpy_iterator():
        chunk = schema_pb2.ChunkData.FromString(record)
        # Now and then (2 runs in 12 on a loaded machine) the checkpoint holds one chunk twice under
        # its one key: Reverb's writer sent it again. The writer made it once: it is counted once.
        if chunk.chunk_key in keys:
            continue
        keys.add(chunk.chunk_key)
        (tensor,) = chunk.data.tensors
        length, *cell = (d.size for d in tensor.tensor_shape.dim)
        assert 1 <= length <= frame_writer.CHUNK_LENGTH
        rows[(tf.dtypes.as_dtype(tensor.dtype).name, tuple(cell))] += length
    assert rows[("uint8", (SIZE, SIZE, 3))] == stored_frames() == 35 < 2 * STACK * items
    assert rows[("float32", (ACTIONS + 2,))] == items == 23
    assert len(rows) == 2


def test_the_online_table_serves_uint8_frame_batches(tmp_path):
    config = ReplayConfig(min_size_to_sample=1, samples_per_insert=None, batch_size=16, n_step=N_STEP, discount=GAMMA)
    server = reverb.Server([replay.make_online_table(config, pixel_spec())], port=None)
    client = reverb.Client(f"localhost:{server.port}")
    writer = replay.make_writer(client, config, replay.ONLINE_TABLE, num_envs=2, layout=replay.layout_of(pixel_spec()))
    drive(writer)
    writer.flush()
    writer.close()
    expected = expected_items()
    layout = replay.layout_of(pixel_spec())
    batches = replay.transitions(replay.make_dataset(f"localhost:{server.port}", config, layout))
    seen = set()
    for _ in range(40):
        batch = next(batches)
        assert batch.observation.shape == (16, STACK, SIZE, SIZE, 3)
        seen.update(assert_items_are(batch, expected))
    assert seen == set(expected)  # 640 uniform draws of 23 items miss one with probability ~1e-11
    server.stop()


def test_the_frame_writer_takes_one_frame_per_timestep(pixel_server):
    layout, _, client = pixel_server
    writer = replay.make_writer(client, ReplayConfig(n_step=N_STEP), QUEUE, layout=layout)
    with pytest.raises(ValueError, match=r"one frame per timestep, uint8 \[H, W, 3\].*got uint8 \[3, 8, 8, 3\]"):
        writer.add_first(dm_env.restart(np.zeros((STACK, SIZE, SIZE, 3), np.uint8)))
    with pytest.raises(ValueError, match="environment 0's first observation is missing"):
        writer.add(np.zeros(ACTIONS, np.float32), dm_env.transition(np.float32(0.0), frame(1)))
    writer.close()


@pytest.mark.parametrize("chunk_length, refs, outcome", [
    (1, [0, 0, 1], "error"),   # the same cell twice: one slice of length 2 out of a 1-row chunk
    (4, [0, 0, 1], [0, 1, 2]),  # ... or, in a longer chunk, the cells after it, silently
    (4, [0, 2, 3], [0, 1, 2]),  # cells with a gap in one chunk: read as if consecutive
    (1, [0, 2, 3], [0, 2, 3]),  # one cell per chunk: any cells, in any order of chunks
])
def test_reverb_reads_the_refs_of_one_chunk_as_consecutive_cells(chunk_length, refs, outcome):
    """Why the frame writer pads an episode's first stack and gives each environment its own
    frame column (replay.frame_writer): Reverb 0.7 merges a column's refs into one chunk."""
    server = reverb.Server([reverb.Table.queue("t", 10, signature={"x": tf.TensorSpec((3, 2), tf.uint8)})], port=None)
    client = reverb.Client(f"localhost:{server.port}")
    writer = reverb_internals.trajectory_writer(client, reverb_internals.chunker_options(chunk_length, 4), 10_000)
    cells = [writer.Append([np.full((2,), value, np.uint8)])[0] for value in range(4)]
    writer.CreateItem("t", 1.0, [[cells[i] for i in refs]], [False])
    writer.Flush(0, 10_000)
    sample = client.sample("t", 1, emit_timesteps=False)
    if outcome == "error":
        with pytest.raises(ValueError, match="Cannot slice"):
            next(sample)
    else:
        assert next(sample).data[0][:, 0].tolist() == outcome
    writer.Close()
    server.stop()
