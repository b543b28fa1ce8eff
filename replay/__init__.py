"""Reverb replay: the online table, the actors' n-step writers (state or frames), and the learner's data pipeline."""

from replay import experience
from replay.config import ReplayConfig
from replay.dataset import DevicePrefetcher, make_dataset, mixed_transitions, to_transition, transitions
from replay.frame_writer import FrameLayout, FrameWriter
from replay.layouts import Layout, layout_of, make_writer, transition_signature
from replay.offline import OFFLINE_TABLE
from replay.tables import ONLINE_TABLE, make_offline_table, make_online_table
from replay.writer import NStepWriter, TransitionLayout

__all__ = [
    "DevicePrefetcher",
    "experience",
    "FrameLayout",
    "FrameWriter",
    "Layout",
    "layout_of",
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
