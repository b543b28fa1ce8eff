"""Ports for node servers: outside the ephemeral range, and held by one process at a time."""

import fcntl
import os
import subprocess
import sys

import pytest

from launch.runtime import ports


def test_reserved_ports_are_distinct_outside_the_ephemeral_range_and_bindable(tmp_path, monkeypatch):
    monkeypatch.setenv(ports.LOCK_DIR_ENV, str(tmp_path))
    low, high = ports._ephemeral_range()
    reserved = [ports.reserve_port() for _ in range(40)]
    assert len(set(reserved)) == 40
    assert all(not low <= port <= high for port in reserved)
    assert all(ports._bindable(port) for port in reserved)


def test_a_held_port_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv(ports.LOCK_DIR_ENV, str(tmp_path))
    first = ports.reserve_port()  # held from here on
    monkeypatch.setattr(ports, "_candidate_range", lambda: (first, first + 2))
    assert ports.reserve_port() == first + 1
    with pytest.raises(RuntimeError, match="No free port"):
        ports.reserve_port(attempts=50)  # both held now


def test_a_reservation_lasts_as_long_as_its_process(tmp_path):
    env = {**os.environ, ports.LOCK_DIR_ENV: str(tmp_path), "PYTHONPATH": os.getcwd()}
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from launch.runtime import ports; "
                               "print(ports.reserve_port(), flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        port = int(holder.stdout.readline())
        with open(tmp_path / f"{port}.lock", "a") as lock:
            with pytest.raises(OSError):  # held: reserve_port skips it
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with open(tmp_path / f"{port}.lock", "a") as lock:  # released with its process
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
