"""The Reverb tables that hold n-step transitions; their signature follows the run's layout (`replay.layouts`)."""

import reverb
from acme import specs

from replay import reverb_internals
from replay.config import ReplayConfig
from replay.layouts import transition_signature

ONLINE_TABLE = "online"


class _SampleToInsertRatioAfterRefill(reverb.rate_limiters.RateLimiter):
    """SampleToInsertRatio for a table refilled with `refill_items` old items (a resumed run).

    Those items were sampled in the run before it stopped. Counted as fresh inserts, they
    would let the learner take refill x samples_per_insert / batch extra updates on old
    data at once; the window of allowed (inserts x ratio - samples) is moved up by their
    share instead, so the refilled table starts where a running one is, in balance.
    """

    def __init__(self, samples_per_insert: float, min_size_to_sample: int, error_buffer: float, refill_items: int):
        offset = samples_per_insert * max(refill_items, min_size_to_sample)
        super().__init__(reverb_internals.rate_limiter(
            samples_per_insert=samples_per_insert, min_size_to_sample=min_size_to_sample,
            min_diff=offset - error_buffer, max_diff=offset + error_buffer))


def _rate_limiter(config: ReplayConfig, refill_items: int = 0) -> reverb.rate_limiters.RateLimiter:
    if config.samples_per_insert is None:
        return reverb.rate_limiters.MinSize(config.min_size_to_sample)
    tolerance = config.samples_per_insert_tolerance_rate * config.samples_per_insert
    # Reverb refuses an error_buffer below max(1, samples_per_insert): one insert's worth
    # of slack. Acme's min_size * tolerance is far above that except for tiny test tables.
    error_buffer = max(config.min_size_to_sample * tolerance, 2.0 * max(1.0, config.samples_per_insert))
    if refill_items > config.min_size_to_sample:
        return _SampleToInsertRatioAfterRefill(config.samples_per_insert, config.min_size_to_sample, error_buffer, refill_items)
    return reverb.rate_limiters.SampleToInsertRatio(
        min_size_to_sample=config.min_size_to_sample,
        samples_per_insert=config.samples_per_insert,
        error_buffer=error_buffer,
    )


def make_online_table(config: ReplayConfig, environment_spec: specs.EnvironmentSpec, name: str = ONLINE_TABLE,
                      refill_items: int = 0) -> reverb.Table:
    """Uniform sampling, FIFO removal, a sample-to-insert rate limiter, a typed signature.

    `refill_items`: old items a resumed run puts back before its actors start.
    """
    return reverb.Table(
        name=name,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=config.max_size,
        rate_limiter=_rate_limiter(config, refill_items),
        signature=transition_signature(environment_spec),
    )


def make_offline_table(items: int, environment_spec: specs.EnvironmentSpec, name: str) -> reverb.Table:
    """Earlier runs' transitions, loaded once: nothing is sampled before all `items` are in."""
    return reverb.Table(
        name=name,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=max(items, 1),
        rate_limiter=reverb.rate_limiters.MinSize(max(items, 1)),
        signature=transition_signature(environment_spec),
    )
