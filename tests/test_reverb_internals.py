"""Reverb's private API as Relay uses it (replay/reverb_internals.py), on a real server with the installed dm-reverb.

Each test first looks for the private pieces it rests on, and calls them in `calling`, so that a Reverb that
differs from the pinned 0.7.3 fails here naming the piece that changed, not somewhere in a run.
"""

import contextlib
import importlib.metadata
import threading

import numpy as np
import pytest
import reverb
import tensorflow as tf

from replay import reverb_internals

INSTALLED = f"dm-reverb {importlib.metadata.version('dm-reverb')} is installed, Relay pins 0.7.3"
TIMEOUT_MS = 5_000


def require(owner, where: str, *names: str) -> None:
    """Fails naming the first of `names` that `owner` (`where`, as the message calls it) lacks."""
    for name in names:
        if not hasattr(owner, name):
            pytest.fail(f"{where} no longer has {name} ({INSTALLED}): adapt replay/reverb_internals.py.")


@contextlib.contextmanager
def calling(piece: str):
    """Fails naming `piece` if the calls in the block raise TypeError: pybind11's answer to arguments that
    no longer match."""
    try:
        yield
    except TypeError as error:
        pytest.fail(f"{piece} takes other arguments ({INSTALLED}; {error}): adapt replay/reverb_internals.py.")


@contextlib.contextmanager
def serving(table: reverb.Table):
    """A client of a local server holding `table`."""
    server = reverb.Server([table], port=None)
    try:
        yield reverb.Client(f"localhost:{server.port}")
    finally:
        server.stop()


def writer_of(client: reverb.Client, max_chunk_length: int, num_keep_alive_refs: int):
    """reverb_internals.trajectory_writer, once the pieces it and its callers use are found."""
    require(reverb.pybind, "reverb.pybind", "ConstantChunkerOptions")
    with calling("reverb.pybind.ConstantChunkerOptions(max_chunk_length=, num_keep_alive_refs=)"):
        options = reverb_internals.chunker_options(max_chunk_length, num_keep_alive_refs)
    require(client, "reverb.Client", "_client")
    cpp_client = client._client  # pylint: disable=protected-access
    require(cpp_client, "reverb.Client._client (the C++ client)", "NewTrajectoryWriter")
    with calling("reverb.Client._client.NewTrajectoryWriter(chunker options, signature timeout in ms)"):
        writer = reverb_internals.trajectory_writer(client, options, TIMEOUT_MS)
    require(writer, "the C++ trajectory writer", "Append", "CreateItem", "Flush", "Close")
    return writer


def test_a_trajectory_writer_with_chunker_options_writes_items_that_sample_back():
    table = reverb.Table.queue("t", 10, signature={"x": tf.TensorSpec((2, 3), tf.int32)})
    with serving(table) as client:
        writer = writer_of(client, max_chunk_length=2, num_keep_alive_refs=2)
        with calling("the C++ trajectory writer's Append(row), CreateItem(table, priority, columns, squeeze), "
                     "Flush(ignore_last_num_items, timeout_ms), Close()"):
            cells = [writer.Append([np.full((3,), value, np.int32)])[0] for value in range(4)]
            writer.CreateItem("t", 1.0, [cells[2:]], [False])
            writer.Flush(0, TIMEOUT_MS)
            # num_keep_alive_refs=2: the refs of older cells have expired.
            assert [cell.expired for cell in cells] == [True, True, False, False]
            writer.Close()
        sample = next(client.sample("t", 1, emit_timesteps=False))
        np.testing.assert_array_equal(sample.data[0], [[2, 2, 2], [3, 3, 3]])


def test_the_rate_limiter_holds_the_table_within_its_min_and_max_diff():
    """A window reverb.rate_limiters.SampleToInsertRatio refuses (min_diff above samples_per_insert x
    min_size_to_sample), as replay.tables' refilled table has: with 1 sample per insert, the first sample
    waits for 3 inserts (3 - 1 >= min_diff 2), and inserts stop at inserts - samples = max_diff 4."""
    require(reverb.pybind, "reverb.pybind", "RateLimiter")
    with calling("reverb.pybind.RateLimiter(samples_per_insert=, min_size_to_sample=, min_diff=, max_diff=)"):
        internal = reverb_internals.rate_limiter(samples_per_insert=1.0, min_size_to_sample=1, min_diff=2.0,
                                                 max_diff=4.0)
    with calling("reverb.rate_limiters.RateLimiter(internal_limiter), which replay.tables subclasses"):
        limiter = reverb.rate_limiters.RateLimiter(internal)
    table = reverb.Table("t", reverb.selectors.Uniform(), reverb.selectors.Fifo(), 100, limiter,
                         signature={"x": tf.TensorSpec((), tf.int32)})
    with serving(table) as client:
        writer = writer_of(client, max_chunk_length=1, num_keep_alive_refs=1)

        def insert(value: int, timeout_ms: int = TIMEOUT_MS) -> None:
            (cell,) = writer.Append([np.int32(value)])
            writer.CreateItem("t", 1.0, [[cell]], [True])
            writer.Flush(0, timeout_ms)

        samples = []
        sampler = threading.Thread(target=lambda: samples.append(next(client.sample("t", emit_timesteps=False))),
                                   daemon=True)
        insert(0)
        insert(1)
        sampler.start()
        sampler.join(0.3)
        assert not samples, "sampled after 2 inserts: min_diff 2 not applied"
        insert(2)
        sampler.join(TIMEOUT_MS / 1000)
        assert samples, "no sample after 3 inserts"
        insert(3)
        insert(4)
        with pytest.raises(RuntimeError, match="Timeout exceeded"):
            insert(5, timeout_ms=300)  # 6 inserts - 1 sample > max_diff 4
        writer.Close()
