"""Reverb replay: the online table, Acme's n-step adder, and the learner's data pipeline."""

from replay.config import ReplayConfig
from replay.dataset import DevicePrefetcher, make_dataset, to_transition, transitions
from replay.tables import ONLINE_TABLE, make_adder, make_online_table

__all__ = [
    "DevicePrefetcher",
    "ONLINE_TABLE",
    "ReplayConfig",
    "make_adder",
    "make_dataset",
    "make_online_table",
    "to_transition",
    "transitions",
]
