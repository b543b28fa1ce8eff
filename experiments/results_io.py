"""Where benchmark and tool outputs go, written so nothing earlier is overwritten."""

import datetime
import json
import os
import pathlib
from typing import Any, Mapping, Optional

DEFAULT_BENCH_DIR = pathlib.Path("runs") / "bench"


def timestamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


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
