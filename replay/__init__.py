"""Reverb replay: the online table, the actors' n-step writers (state or frames), and the learner's data pipeline.

Names are loaded on first use (PEP 562): `from replay.config import ReplayConfig`, which every
run's config needs, then costs nothing, and processes that never touch Reverb (the counter, the
evaluator) do not import it and TensorFlow (about 3.5 s of CPU each on a 2-core machine).
"""

import importlib

# Each public name and the submodule that defines it.
_SOURCES = {
    "experience": None,
    "offline": None,
    "ReplayConfig": "config",
    "DevicePrefetcher": "dataset",
    "make_dataset": "dataset",
    "mixed_transitions": "dataset",
    "split_into_steps": "dataset",
    "stacked": "dataset",
    "to_transition": "dataset",
    "transitions": "dataset",
    "FrameLayout": "frame_writer",
    "FrameWriter": "frame_writer",
    "Layout": "layouts",
    "layout_of": "layouts",
    "make_writer": "layouts",
    "transition_signature": "layouts",
    "OFFLINE_TABLE": "offline",
    "ONLINE_TABLE": "tables",
    "make_offline_table": "tables",
    "make_online_table": "tables",
    "NStepWriter": "writer",
    "TransitionLayout": "writer",
}

__all__ = sorted(_SOURCES)


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module 'replay' has no attribute {name!r}")
    module = importlib.import_module(f"replay.{_SOURCES[name] or name}")
    value = module if _SOURCES[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_SOURCES))
