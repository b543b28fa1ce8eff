"""Reverb replay: the online table, the actors' n-step writer, and the learner's data pipeline."""

from replay import experience
from replay.config import ReplayConfig
from replay.dataset import DevicePrefetcher, make_dataset, to_transition, transitions
from replay.tables import ONLINE_TABLE, make_online_table
from replay.writer import NStepWriter, make_writer, transition_signature

__all__ = [
    "DevicePrefetcher",
    "experience",
    "ONLINE_TABLE",
    "ReplayConfig",
    "NStepWriter",
    "make_writer",
    "transition_signature",
    "make_dataset",
    "make_online_table",
    "to_transition",
    "transitions",
]
