"""Every use of Reverb's private API, for dm-reverb 0.7.3 (pinned in setup.py): where to adapt when it changes.

  - `chunker_options`, `trajectory_writer`: the replay writers need a constant chunk length per
    column (one cell per chunk for state items, `frame_writer.CHUNK_LENGTH` cells for frames), and
    they call the C++ trajectory writer directly, as the Python one costs about three times as much
    per item (`replay.writer.NStepWriter`). reverb.Client.trajectory_writer takes no chunker options
    and wraps its writer in the Python TrajectoryWriter.
  - `rate_limiter`: a sample-to-insert rate limiter whose (min_diff, max_diff) window is moved up
    for a refilled table (`replay.tables`); reverb.rate_limiters has no public constructor taking a
    window above samples_per_insert x min_size_to_sample (SampleToInsertRatio refuses it).

tests/test_reverb_internals.py checks each against the installed Reverb.
"""

from __future__ import annotations  # pybind names in annotations: a missing one fails its test, not the import

import reverb
from reverb import pybind


def chunker_options(max_chunk_length: int, num_keep_alive_refs: int) -> pybind.ConstantChunkerOptions:
    """Chunks of `max_chunk_length` cells in every column; the refs of each column's newest
    `num_keep_alive_refs` cells stay usable in new items."""
    return pybind.ConstantChunkerOptions(max_chunk_length=max_chunk_length, num_keep_alive_refs=num_keep_alive_refs)


def trajectory_writer(client: reverb.Client, options: pybind.ConstantChunkerOptions,
                      signature_timeout_ms: int) -> pybind.TrajectoryWriter:
    """Reverb's C++ trajectory writer on `client`'s server (Append, CreateItem, Flush, Close).

    `signature_timeout_ms`: how long it waits for the tables' signatures, which it checks items against."""
    return client._client.NewTrajectoryWriter(options, signature_timeout_ms)  # pylint: disable=protected-access


def rate_limiter(samples_per_insert: float, min_size_to_sample: int, min_diff: float,
                 max_diff: float) -> pybind.RateLimiter:
    """The limiter a reverb.rate_limiters.RateLimiter wraps: no sampling below `min_size_to_sample` items, and
    inserts x samples_per_insert - samples kept within [min_diff, max_diff] (inserts block above, samples below)."""
    return pybind.RateLimiter(samples_per_insert=samples_per_insert, min_size_to_sample=min_size_to_sample,
                              min_diff=min_diff, max_diff=max_diff)
