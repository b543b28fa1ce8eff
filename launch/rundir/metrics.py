"""Per-node metrics, as CSV and as TensorBoard scalars, inside the run directory.

    run_dir/metrics/<node>.csv              one row per record; the header is the first record's keys
    run_dir/tensorboard/<node>/events.out.* the same numbers, one scalar per column, at the row's step

Every row is flushed as it is written, so a killed run keeps all its rows but the one
being written (readers skip a partial last row: see `read_rows`).
"""

import csv
import os
from typing import Dict, List, Mapping

import numpy as np

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

METRICS_DIR = "metrics"
TENSORBOARD_DIR = "tensorboard"


def csv_path(run_dir: str, node: str) -> str:
    return os.path.join(run_dir, METRICS_DIR, f"{node}.csv")


class MetricsWriter:
    """Writes rows of numbers for one node; `step_key` names the column used as TensorBoard's step."""

    def __init__(self, run_dir: str, node: str, step_key: str):
        self._step_key = step_key
        self._fields: List[str] = []
        os.makedirs(os.path.join(run_dir, METRICS_DIR), exist_ok=True)
        # Appending keeps whatever an earlier process of this node wrote.
        path = csv_path(run_dir, node)
        self._existing_header = _header(path)
        self._file = open(path, "a", newline="")
        self._csv = csv.writer(self._file)
        self._events = EventFileWriter(os.path.join(run_dir, TENSORBOARD_DIR, node), flush_secs=5)

    def write(self, row: Mapping[str, float], wall_time: float) -> None:
        if not self._fields:
            if self._step_key not in row:
                raise ValueError(f"A metrics row needs its step column {self._step_key!r}; got {sorted(row)}.")
            self._fields = [self._step_key] + sorted(k for k in row if k != self._step_key)
            if self._file.tell() == 0:
                self._csv.writerow(self._fields)
            elif self._fields != self._existing_header:
                self._widen(self._existing_header)
        unknown = set(row) - set(self._fields)
        if unknown:
            raise ValueError(f"Metrics columns {sorted(unknown)} were not in the first row {self._fields}.")
        self._csv.writerow([_format(row[field]) if field in row else "" for field in self._fields])
        self._file.flush()
        values = [
            summary_pb2.Summary.Value(tag=field, simple_value=float(row[field]))
            for field in self._fields[1:] if field in row
        ]
        self._events.add_event(event_pb2.Event(
            wall_time=wall_time, step=int(row[self._step_key]), summary=summary_pb2.Summary(value=values),
        ))

    def _widen(self, header: List[str]) -> None:
        """Rows with columns the file lacks (a run resumed by a newer Relay, whose nodes log
        more): the file is rewritten with every column, the earlier rows given "nan" in the
        new ones. Rows that lack some of the file's columns are refused."""
        missing = [field for field in header if field not in self._fields]
        if missing or not header or header[0] != self._step_key:
            raise ValueError(f"{self._file.name} has columns {header}; these rows have "
                             f"{self._fields}. Write them under another node name.")
        path = self._file.name
        self._file.close()
        with open(path, newline="") as file:
            lines = file.read().split("\n")[:-1]  # a last line without its newline was cut by a kill
        with open(path + ".tmp", "w", newline="") as file:
            widened = csv.writer(file)
            widened.writerow(self._fields)
            for row in csv.DictReader(lines):
                widened.writerow([row.get(field, "nan") for field in self._fields])
        os.replace(path + ".tmp", path)
        self._file = open(path, "a", newline="")
        self._csv = csv.writer(self._file)

    def close(self) -> None:
        self._events.close()
        self._file.close()


def _header(path: str) -> List[str]:
    try:
        with open(path, newline="") as file:
            return next(csv.reader(file), [])
    except FileNotFoundError:
        return []


def _format(value) -> str:
    # Counts stay exact; measured values keep 7 significant digits.
    return str(value) if isinstance(value, (int, np.integer)) else f"{float(value):.7g}"


def read_rows(path: str) -> List[Dict[str, float]]:
    """The complete rows of a metrics CSV as dicts of floats; [] when there is no file yet.

    The file may be read while its node writes it: a last line without its newline is
    still being written, and is left out.
    """
    try:
        with open(path, newline="") as file:
            text = file.read()
    except FileNotFoundError:
        return []
    lines = text.split("\n")[:-1]  # the piece after the last newline is incomplete (or empty)
    rows = []
    for row in csv.DictReader(lines):
        try:
            rows.append({k: float(v) for k, v in row.items()})
        except (TypeError, ValueError):  # a damaged row (a kill mid-write) ends what can be trusted
            break
    return rows
