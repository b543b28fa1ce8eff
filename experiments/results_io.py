"""Where benchmark and tool outputs go, written so nothing earlier is overwritten."""

import json
import os
import pathlib
import platform
from typing import Any, Mapping, Optional, Tuple

from launch.rundir.paths import timestamp

DEFAULT_BENCH_DIR = pathlib.Path("runs") / "bench"


def write_json_exclusive(data: Mapping[str, Any], path: os.PathLike) -> pathlib.Path:
    """Writes `data` as JSON to a new file; refuses to replace an existing one."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x") as file:
            json.dump(data, file, indent=2, sort_keys=True)
            file.write("\n")
    except FileExistsError:
        raise FileExistsError(
            f"{path} already exists and is not overwritten; pass another --out path."
        ) from None
    return path


def bench_output_path(name: str, out: Optional[str]) -> pathlib.Path:
    """`out` if given, else runs/bench/<name>-<UTC time>.json."""
    if out:
        return pathlib.Path(out)
    return DEFAULT_BENCH_DIR / f"{name}-{timestamp()}.json"


def new_results_dir(name: str, task: str, out_dir: Optional[str]) -> Tuple[pathlib.Path, pathlib.Path]:
    """(results directory, root for the runs it launches) of a multi-run benchmark.

    The results directory is `out_dir`, or runs/bench/<name>-<task>-<UTC time>; it must be
    new or empty (nothing is overwritten). Runs go under runs/bench/<name>-<task>-<time>-runs.
    """
    stem = f"{name}-{task.replace(':', '_')}-{timestamp()}"
    path = pathlib.Path(out_dir or DEFAULT_BENCH_DIR / stem)
    if path.exists() and any(path.iterdir()):
        raise SystemExit(f"error: {path} is not empty and is never overwritten; pass another --out_dir.")
    path.mkdir(parents=True, exist_ok=True)
    return path, DEFAULT_BENCH_DIR / f"{stem}-runs"


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), which every benchmark's figures are quoted with."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
