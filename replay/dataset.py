"""From the Reverb table to learner batches on the learner's devices.

    dataset = make_dataset(server_address, config, layout)    # tf.data, batches of n-step transitions
    batches = DevicePrefetcher(transitions(dataset), sharding, size=config.prefetch_batches)
    batch = next(batches)                                      # agents.Transition, already on the devices

A learner that makes k updates a call (`Learner.update_many`) takes k batches as one
[k, B, ...]: sampled as one batch of k x B (`split_into_steps`), or, where each of the k
must be mixed on its own (RaE's exact share), k mixed batches stacked (`stacked`). Either
way one transfer to the devices carries k updates' data.
"""

import itertools
import queue
import threading
from typing import Callable, Iterator, List, Optional

import jax
import numpy as np
import reverb

import agents
from replay.config import ReplayConfig
from replay.layouts import Layout
from replay.tables import ONLINE_TABLE
from replay.writer import FIELDS


def make_dataset(server_address: str, config: ReplayConfig, layout: Layout, table: str = ONLINE_TABLE,
                 batch_size: Optional[int] = None, rate_limiter_timeout_ms: int = -1,
                 signature_timeout_s: Optional[int] = None):
    """Batches of n-step transitions sampled from `table`: a tf.data.Dataset of ReplaySample
    whose data is a dict of the FIELDS (unpacked from the stored items with `layout`).

    With rate_limiter_timeout_ms >= 0 an iteration ends once the table's rate limiter has
    held sampling that long (see `transitions` for going on); -1 waits forever. The table's
    signature is asked of the server first: with `signature_timeout_s`, a server that does not
    answer within it raises reverb.errors.DeadlineExceededError; None waits forever.
    """
    batch_size = batch_size or config.batch_size
    dataset = reverb.TrajectoryDataset.from_table_signature(
        server_address=server_address, table=table, max_in_flight_samples_per_worker=2 * batch_size,
        num_workers_per_iterator=config.sampling_workers or -1,
        rate_limiter_timeout_ms=rate_limiter_timeout_ms, get_signature_timeout_secs=signature_timeout_s,
    )
    unpack = lambda sample: sample._replace(data=layout.unpack_item(sample.data))  # noqa: E731
    return dataset.batch(batch_size, drop_remainder=True).map(unpack).prefetch(2)


def to_transition(sample: reverb.ReplaySample) -> agents.Transition:
    """A batched ReplaySample of replay items as the learner's batch (numpy): frames stay uint8
    (a quarter of float32's bytes on the way to the devices), the rest float32."""
    data = sample.data
    return agents.Transition(**{
        field: data[field] if data[field].dtype == np.uint8 else np.asarray(data[field], np.float32)
        for field in FIELDS})


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


class _ItemStream:
    """The items of a stream of batches, handed out in any number: what a batch leaves over
    is handed out next, so nothing sampled is thrown away."""

    def __init__(self, batches: Iterator[agents.Transition]):
        self._batches = batches
        self._held: Optional[agents.Transition] = None  # the part of the last batch not yet handed out

    def take(self, count: int) -> List[agents.Transition]:
        """The next `count` items, as pieces of batches in order; StopIteration when the batches end."""
        pieces = []
        while count > 0:
            if self._held is None:
                self._held = next(self._batches)
            held = len(self._held.reward)
            if held <= count:
                pieces.append(self._held)
                self._held, count = None, count - held
            else:
                pieces.append(jax.tree_util.tree_map(lambda a: a[:count], self._held))
                self._held, count = jax.tree_util.tree_map(lambda a: a[count:], self._held), 0
        return pieces


def mixed_transitions(online_dataset, offline_dataset, batch_size: int, offline_count: Callable[[int], int],
                      stop: Optional[threading.Event] = None) -> Iterator[agents.Transition]:
    """Batches of online items followed by offline items; batch i holds exactly offline_count(i) offline items.

    Each dataset is drawn from only as its items are used: a share that changes over time
    (an annealed RaE) takes what each batch needs and carries the rest of a sampled batch
    into the next. Datasets batched at the share's sizes give each batch from one batch of each.
    """
    online, offline = _ItemStream(transitions(online_dataset, stop)), _ItemStream(transitions(offline_dataset, stop))
    for index in itertools.count():
        keep = offline_count(index)
        try:
            pieces = online.take(batch_size - keep) + offline.take(keep)
        except StopIteration:  # a dataset ended: the program is stopping
            return
        yield jax.tree_util.tree_map(lambda *parts: np.concatenate(parts), *pieces)


def split_into_steps(batch: agents.Transition, steps: int) -> agents.Transition:
    """A batch of k x B items as k batches of B, [k, B, ...] (a view of the same memory)."""
    return jax.tree_util.tree_map(lambda a: a.reshape((steps, -1) + a.shape[1:]), batch)


def stacked(batches: Iterator[agents.Transition], steps: int) -> Iterator[agents.Transition]:
    """Every k batches of `batches` as one, [k, B, ...], in order; a last group short of k is dropped
    (the source ends only as the program stops)."""
    while True:
        group = list(itertools.islice(batches, steps))
        if len(group) < steps:
            return
        yield jax.tree_util.tree_map(lambda *parts: np.stack(parts), *group)


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
        # Release the source's TF iterator over Reverb now, while the replay server still
        # answers. Left to the garbage collector, it was released when the learner's run()
        # returned, and with the server gone that blocked the learner's thread for ~8 s on a
        # loaded machine (past Launchpad's 10 s grace in local_mt). A generator still running
        # in the thread (held by the rate limiter) cannot be closed; it ends within the
        # sampling timeout.
        if not self._thread.is_alive() and hasattr(self._source, "close"):
            self._source.close()
