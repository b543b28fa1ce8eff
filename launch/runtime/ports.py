"""Ports for the servers of node processes, free on this host and reserved until the process ends.

A port picked by binding port 0 and releasing it is an ephemeral port: the next outgoing
connection on the host (gRPC clients make many while a node starts) may take it before the
node's server binds it; seen as "Address already in use". So a node's port comes from below
the kernel's ephemeral range, where outgoing connections never land, and is reserved by an
flock on a lock file shared by every run on the host, /tmp/relay-ports/<port>.lock, held
until the process ends: two Relay processes on one host (of one run or of two) never take
the same port. A candidate is taken only if it is also bindable now. The lock files stay
(empty; one per port ever used).
"""

import fcntl
import os
import random
import socket
from typing import List, Tuple

LOCK_DIR_ENV = "RELAY_PORT_LOCK_DIR"
_DEFAULT_LOCK_DIR = "/tmp/relay-ports"
# Below the usual ephemeral range (32768-60999); used when the host's range leaves room.
_LOWEST_PORT = 20000
# The lock files this process holds: its reservations last as long as it does.
_held: List[object] = []


def _ephemeral_range() -> Tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as file:
            low, high = (int(part) for part in file.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _candidate_range() -> Tuple[int, int]:
    """[low, high) outside the ephemeral range: below it when there is room, else above it."""
    low, high = _ephemeral_range()
    if low - _LOWEST_PORT >= 1000:
        return _LOWEST_PORT, low
    if 65535 - high >= 1000:
        return high + 1, 65536
    return 1024, 65536  # a host that gives every port to outgoing connections


def _bindable(port: int) -> bool:
    for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC's servers bind
                probe.bind((host, port))
        except OSError as error:
            if family == socket.AF_INET6 and not socket.has_ipv6:
                continue
            if error.errno in (97, 99):  # this address family is not available on the host
                continue
            return False
    return True


def reserve_port(attempts: int = 500) -> int:
    """A port no Relay process on this host holds and nothing listens on; held until this process ends."""
    lock_dir = os.environ.get(LOCK_DIR_ENV, _DEFAULT_LOCK_DIR)
    os.makedirs(lock_dir, exist_ok=True)
    try:
        os.chmod(lock_dir, 0o1777)  # every user's runs share it, as /tmp
    except PermissionError:  # another user's directory, already shared
        pass
    low, high = _candidate_range()
    rng = random.SystemRandom()
    for _ in range(attempts):
        port = rng.randrange(low, high)
        try:
            lock = open(os.path.join(lock_dir, f"{port}.lock"), "a")
        except PermissionError:  # another user's lock file: theirs
            continue
        try:
            os.fchmod(lock.fileno(), 0o666)  # every user may lock it in turn
        except PermissionError:  # already another user's, and open to all
            pass
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another Relay process holds it
            lock.close()
            continue
        if _bindable(port):
            _held.append(lock)
            return port
        lock.close()
    raise RuntimeError(f"No free port found in {low}-{high - 1} after {attempts} tries "
                       f"(reservations under {lock_dir}).")
