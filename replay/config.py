"""Replay settings, as a frozen dataclass that validates itself."""

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """The online replay table and how actors fill it; defaults are Acme's MPO."""

    # Items (n-step transitions) kept; the oldest go first (FIFO).
    max_size: int = 1_000_000
    # No batch is sampled before the table holds this many items.
    min_size_to_sample: int = 1_000
    # Times each inserted item is sampled on average: with batch 256, one SGD step per 8
    # inserts. The rate limiter blocks whichever side gets ahead of this ratio. None: no
    # ratio, actors run free once min size is reached (benchmarks, pure data collection).
    samples_per_insert: Optional[float] = 32.0
    # Slack of the rate limiter, as a fraction of samples_per_insert (Acme's default).
    samples_per_insert_tolerance_rate: float = 0.1
    batch_size: int = 256
    # n-step returns: actors insert (s_t, a_t, Σ γ^i r_{t+i}, ..., s_{t+n}).
    n_step: int = 5
    discount: float = 0.99
    # Batches the learner keeps ready beyond the one it is working on.
    prefetch_batches: int = 2
    # Reverb sampler threads per learner dataset, each with its own stream of samples from
    # the server (None: Reverb's own choice). From a server in another process, one stream's
    # round trips, not CPU, held the learner's batches (experiments/results/README.md, "data path").
    sampling_workers: Optional[int] = None

    def __post_init__(self):
        checks = [
            (self.max_size >= 1, "max_size must be >= 1"),
            (1 <= self.min_size_to_sample <= self.max_size, "min_size_to_sample must be in [1, max_size]"),
            (self.samples_per_insert is None or self.samples_per_insert > 0, "samples_per_insert must be > 0 or None"),
            (self.samples_per_insert_tolerance_rate > 0, "samples_per_insert_tolerance_rate must be > 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.n_step >= 1, "n_step must be >= 1"),
            (0.0 <= self.discount <= 1.0, "discount must be in [0, 1]"),
            (self.prefetch_batches >= 1, "prefetch_batches must be >= 1"),
            (self.sampling_workers is None or self.sampling_workers >= 1, "sampling_workers must be >= 1 or None"),
        ]
        for ok, message in checks:
            if not ok:
                field = message.split()[0]
                raise ValueError(f"ReplayConfig.{message}, got {getattr(self, field)!r}.")
