"""The Reverb table that holds actors' n-step transitions."""

import reverb
from acme import specs
from acme.adders import reverb as acme_adders

from replay.config import ReplayConfig

ONLINE_TABLE = "online"


def _rate_limiter(config: ReplayConfig) -> reverb.rate_limiters.RateLimiter:
    if config.samples_per_insert is None:
        return reverb.rate_limiters.MinSize(config.min_size_to_sample)
    tolerance = config.samples_per_insert_tolerance_rate * config.samples_per_insert
    # Reverb refuses an error_buffer below max(1, samples_per_insert): one insert's worth
    # of slack. Acme's min_size * tolerance is far above that except for tiny test tables.
    error_buffer = max(config.min_size_to_sample * tolerance, 2.0 * max(1.0, config.samples_per_insert))
    return reverb.rate_limiters.SampleToInsertRatio(
        min_size_to_sample=config.min_size_to_sample,
        samples_per_insert=config.samples_per_insert,
        error_buffer=error_buffer,
    )


def make_online_table(config: ReplayConfig, environment_spec: specs.EnvironmentSpec, name: str = ONLINE_TABLE) -> reverb.Table:
    """Uniform sampling, FIFO removal, a sample-to-insert rate limiter, a typed signature."""
    return reverb.Table(
        name=name,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=config.max_size,
        rate_limiter=_rate_limiter(config),
        signature=acme_adders.NStepTransitionAdder.signature(environment_spec),
    )


class NStepAdder(acme_adders.NStepTransitionAdder):
    """Acme's n-step transition adder, plus a `close()` that may be called from another thread.

    An insert blocked by the table's rate limiter never returns on its own once the
    learner stops sampling; closing the writer makes it raise, so the actor can exit.
    """

    _closed = False

    def close(self) -> None:
        self._closed = True
        self._writer.close()

    def __del__(self):
        if not self._closed:  # Acme's __del__ flushes, which a closed writer refuses
            super().__del__()


def make_adder(client: reverb.Client, config: ReplayConfig, table: str = ONLINE_TABLE) -> NStepAdder:
    """Acme's n-step transition adder writing into `table`.

    It stores the n-step return and D = γ^(n-1) d_t ... d_(t+n-1); the learner's
    bootstrap factor is γ·D (see `replay.dataset.to_transition`).
    """
    return NStepAdder(
        client=client, n_step=config.n_step, discount=config.discount, priority_fns={table: None}
    )
