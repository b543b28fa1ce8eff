"""A run directory's JSON files: written whole (a reader never sees half a file), read
as None while missing or being written; and JSON-lines logs, one record a line."""

import json
import os
from typing import List, Optional


def read_json(path: str) -> Optional[dict]:
    """The JSON at `path`, or None if it is missing or (being written) not valid yet."""
    try:
        with open(path) as file:
            return json.load(file)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_json(path: str, data) -> None:
    """Writes `path` atomically: a reader never sees half a file."""
    with open(path + ".tmp", "w") as file:
        json.dump(data, file, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def read_jsonl(path: str) -> List[dict]:
    """The records of the JSON-lines file at `path`, oldest first ([] if it is missing); a line
    still being written is left out."""
    try:
        with open(path) as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records
