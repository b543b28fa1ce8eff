"""Reverb replay: the online table, the actors' n-step writer, and the learner's data pipeline."""

from replay import experience
from replay.config import ReplayConfig
from replay.dataset import DevicePrefetcher, make_dataset, mixed_transitions, to_transition, transitions
from replay.offline import OFFLINE_TABLE
from replay.tables import ONLINE_TABLE, make_offline_table, make_online_table
from replay.writer import NStepWriter, TransitionLayout, make_writer, transition_signature

__all__ = [
    "DevicePrefetcher",
    "experience",
    "OFFLINE_TABLE",
    "ONLINE_TABLE",
    "ReplayConfig",
    "NStepWriter",
    "make_writer",
    "transition_signature",
    "TransitionLayout",
    "make_dataset",
    "make_offline_table",
    "make_online_table",
    "mixed_transitions",
    "to_transition",
    "transitions",
]
