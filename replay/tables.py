"""The Reverb table that holds actors' n-step transitions."""

import reverb
from acme import specs

from replay.config import ReplayConfig
from replay.writer import transition_signature

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
