"""From the Reverb table to learner batches on the learner's devices.

    dataset = make_dataset(server_address, config, layout)    # tf.data, batches of n-step transitions
    batches = DevicePrefetcher(transitions(dataset), sharding, size=config.prefetch_batches)
    batch = next(batches)                                      # agents.Transition, already on the devices
"""

import queue
import threading
from typing import Callable, Iterator, Optional

import jax
import numpy as np
import reverb

import agents
from replay.config import ReplayConfig
from replay.tables import ONLINE_TABLE
from replay.writer import FIELDS, PACKED, TransitionLayout


def make_dataset(server_address: str, config: ReplayConfig, layout: TransitionLayout, table: str = ONLINE_TABLE,
                 batch_size: Optional[int] = None, rate_limiter_timeout_ms: int = -1):
    """Batches of n-step transitions sampled from `table`: a tf.data.Dataset of ReplaySample
    whose data is a dict of the FIELDS (unpacked from the stored vectors with `layout`).

    With rate_limiter_timeout_ms >= 0 an iteration ends once the table's rate limiter has
    held sampling that long (see `transitions` for going on); -1 waits forever.
    """
    batch_size = batch_size or config.batch_size
    dataset = reverb.TrajectoryDataset.from_table_signature(
        server_address=server_address, table=table, max_in_flight_samples_per_worker=2 * batch_size,
        rate_limiter_timeout_ms=rate_limiter_timeout_ms,
    )
    unpack = lambda sample: sample._replace(data=layout.unpack(sample.data[PACKED]))  # noqa: E731
    return dataset.batch(batch_size, drop_remainder=True).map(unpack).prefetch(2)


def to_transition(sample: reverb.ReplaySample) -> agents.Transition:
    """A batched ReplaySample of `replay.writer` items as the learner's batch (numpy, float32)."""
    return agents.Transition(**{field: np.asarray(sample.data[field], np.float32) for field in FIELDS})


def transitions(dataset, stop: Optional[threading.Event] = None) -> Iterator[agents.Transition]:
    """The dataset's batches as learner batches; with `stop`, iterations that end are started
    again until it is set.

    A learner samples with a rate-limiter timeout and a stop event: a sample the rate
    limiter holds forever (actors stopped) would otherwise pin a TensorFlow iterator
    that cannot be destroyed, and the learner process could not exit.
    """
    while True:
        for sample in dataset.as_numpy_iterator():
            yield to_transition(sample)
        if stop is None or stop.is_set():
            return


def mixed_transitions(online_dataset, offline_dataset, stop: Optional[threading.Event] = None,
                      offline_count: Optional[Callable[[int], int]] = None) -> Iterator[agents.Transition]:
    """Batches of online items followed by offline items: the offline share is exact in every batch.

    Without `offline_count` the two datasets' batch sizes set the share. With it (a share
    that changes over time), both datasets give full batches, and batch i keeps the first
    offline_count(i) offline items and fills the rest from the online batch.
    """
    for index, (online, offline) in enumerate(zip(transitions(online_dataset, stop), transitions(offline_dataset, stop))):
        if offline_count is not None:
            keep = offline_count(index)
            online = jax.tree_util.tree_map(lambda a: a[: len(a) - keep], online)
            offline = jax.tree_util.tree_map(lambda a: a[:keep], offline)
        yield jax.tree_util.tree_map(lambda a, b: np.concatenate([a, b]), online, offline)


class DevicePrefetcher:
    """Keeps `size` batches already transferred to the learner's devices.

    A background thread pulls host batches and starts their transfer, so the
    learner's update never waits for sampling or host-to-device copies while the
    table has data. `close()` stops the thread. `next()` raises StopIteration once
    the source is exhausted, and re-raises an error the source raised.
    """

    _END = object()

    def __init__(self, source: Iterator[agents.Transition], sharding: jax.sharding.Sharding, size: int = 2):
        self._source = source
        self._sharding = sharding
        self._queue: "queue.Queue" = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._fill, name="device-prefetch", daemon=True)
        self._thread.start()

    def _fill(self):
        try:
            for batch in self._source:
                on_device = jax.device_put(batch, self._sharding)
                while not self._stop.is_set():
                    try:
                        self._queue.put(on_device, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as error:  # handed to the consumer, not lost in a thread
            self._error = error
        finally:
            self._put_end()

    def _put_end(self):
        while not self._stop.is_set():
            try:
                self._queue.put(self._END, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self, timeout: Optional[float] = None) -> Optional[agents.Transition]:
        """The next batch, or None if none arrived within `timeout` seconds."""
        try:
            return self._unwrap(self._queue.get(timeout=timeout))
        except queue.Empty:
            return None

    def _unwrap(self, item):
        if item is self._END:
            self._queue.put(self._END)  # the slot just freed: later calls end too
            if self._error is not None:
                raise self._error
            raise StopIteration
        return item

    def close(self):
        self._stop.set()
        # A source that never ends (a sample held forever) would keep the thread; it is a
        # daemon and must not hold up the node's exit. The learner's source ends within
        # its rate-limiter timeout once stop is set (see `transitions`).
        self._thread.join(timeout=1.0)
