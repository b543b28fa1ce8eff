"""The learner's skipped updates: counted, and fatal when too many come in a row.

The jitted step does not apply an update whose loss or gradients hold a NaN or an inf
(`agents.learning`): it returns its input state and sets the metric `nonfinite_updates`.
A few such updates (one bad batch) are survivable; many in a row mean the data or the
learning has gone wrong for good, and the run stops with a `RunError` that says where to look.

The flags stay on the device until `read`, which the node calls where it copies the
metrics to the host anyway (every `learner_publish_period` updates, and at checkpoints):
reading each update's flag as it comes would make every step wait for the device. The
flags are read in order, so "K in a row" is exact; only noticing it waits for the read
(at most `learner_publish_period` updates, all of them skipped or applied as they should).
"""

from typing import List, Optional

import jax
import numpy as np

from launch.faults import RunError
from launch.rundir.metrics import csv_path


class NonFiniteGuard:
    """Counts skipped updates; `check` raises RunError once `max_in_a_row` came in a row."""

    def __init__(self, max_in_a_row: int, run_dir: str, step: int):
        if max_in_a_row < 1:
            raise ValueError(f"max_in_a_row must be >= 1, got {max_in_a_row!r}.")
        self.max_in_a_row = max_in_a_row
        self.run_dir = run_dir
        self.step = step  # the learner state's step counter, as of the last read
        self.skipped = 0  # updates skipped in this launch
        self.in_a_row = 0  # skipped since the last applied update
        self.tripped_at: Optional[int] = None  # the learner step of the first run of max_in_a_row
        self._unread: List = []

    @property
    def unread(self) -> int:
        return len(self._unread)

    def record(self, skipped) -> None:
        """Once per call of the update: its `nonfinite_updates` metric (one update), or the
        `nonfinite_each` of k updates in one call, left on the device."""
        self._unread.append(skipped)

    def read(self) -> int:
        """Reads the flags recorded since the last read (one device-to-host copy), in order,
        and returns the learner step: the updates applied so far."""
        recorded, self._unread = jax.device_get(self._unread), []
        for flag in (flag for flags in recorded for flag in np.ravel(flags)):
            if float(flag) > 0.0:
                self.skipped += 1
                self.in_a_row += 1
                if self.in_a_row >= self.max_in_a_row and self.tripped_at is None:
                    self.tripped_at = self.step
            else:
                self.step += 1
                self.in_a_row = 0
        return self.step

    def check(self) -> None:
        """Raises RunError if some read found `max_in_a_row` skipped updates in a row."""
        if self.tripped_at is not None:
            raise RunError(self.message(self.tripped_at))

    def message(self, step: int) -> str:
        return (
            f"{self.max_in_a_row} learner updates in a row had a NaN or inf loss or gradients (at learner step "
            f"{step}): each was skipped, keeping the last good state, and the run is stopped. Skipped updates are "
            f"counted in {csv_path(self.run_dir, 'learner')} (column skipped_updates; {self.skipped} in this "
            f"launch). Check the data for NaN or inf (rewards, observations; an --rae_from run's experience), try a "
            f"lower learning rate (--set=learner.learning_rate=...), or allow more in a row with "
            f"--set=experiment.max_nonfinite_updates_in_a_row=N."
        )
