"""config.json, the config of a run's latest launch, and resumes.json, one entry per resume."""

import dataclasses
import os

from launch.config import ExperimentConfig, dataclass_from_json
from launch.rundir.jsonio import read_json, write_json
from launch.rundir.paths import RunPaths, timestamp


def read_config(run_dir: str, flag: str = "--resume") -> ExperimentConfig:
    """A run's own config, with its directory where it is now (a run may be moved). `flag`
    names the argument that gave `run_dir`, for the error when it is not a run."""
    saved = read_json(RunPaths(run_dir).config)
    if saved is None:
        raise ValueError(f"{flag}={run_dir}: no config.json there, so it is not a Relay run directory.")
    config = dataclass_from_json(ExperimentConfig, saved)
    if os.path.abspath(run_dir) != config.run_dir:
        config = dataclasses.replace(config, run_dir=os.path.abspath(run_dir))
    return config


def write_config(config: ExperimentConfig) -> None:
    """config.json, and for a resumed launch one more entry in resumes.json."""
    paths = RunPaths(config.run_dir)
    if config.resume is not None:
        history = read_json(paths.resumes) or []
        history.append({**dataclasses.asdict(config.resume), "time_utc": timestamp()})
        write_json(paths.resumes, history)
    write_json(paths.config, dataclasses.asdict(config))
