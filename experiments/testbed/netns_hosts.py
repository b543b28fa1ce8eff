"""Fake "hosts" on this machine: Linux network namespaces joined to one bridge.

For tests and benchmarks.  ``HostNamespaces(["h1", "h2"])`` creates, for every
name, a network namespace with its own loopback and one veth interface whose
peer is enslaved to a bridge in the root namespace.  All of them share a /24
in 10.0.0.0/8 that no interface on the machine uses yet: the bridge gets .1,
host k (0-based) gets .(k+2).  There is no default route, no NAT and IP
forwarding is not touched, so traffic from the namespaces can only reach
loopback, the other namespaces and the bridge address.

Processes are started inside a namespace with ``nsenter --net=...`` rather
than ``ip netns exec`` (the latter remounts /sys, which confuses slurmd).

Requires root.  ``unavailable_reason()`` says why the module cannot be used
(for ``pytest.skip``).
"""

from __future__ import annotations

import fcntl
import ipaddress
import itertools
import os
import shutil
import signal
import subprocess
import time
from typing import Dict, List, Optional, Sequence

__all__ = ["HostNamespaces", "unavailable_reason"]

_NETNS_DIR = "/run/netns"
_LOCK_PATH = "/run/lock/relay-netns-hosts.lock"
_IFNAMSIZ = 15  # longest Linux interface name
_instance_counter = itertools.count()


def _run(argv: Sequence[str], check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            "command failed (rc=%d): %s\n%s%s"
            % (proc.returncode, " ".join(argv), proc.stdout, proc.stderr)
        )
    return proc


def unavailable_reason() -> Optional[str]:
    """None when network namespaces can be used here, else a readable reason."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (running as uid %s)" % getattr(os, "geteuid", lambda: "?")()
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return "'%s' is not on PATH" % tool
    probe = "rlprobe%x" % os.getpid()
    try:
        proc = _run(["ip", "netns", "add", probe], check=False)
        if proc.returncode != 0:
            return "'ip netns add' does not work here: %s" % (proc.stderr.strip() or proc.stdout.strip())
        try:
            proc = _run(
                ["nsenter", "--net=%s/%s" % (_NETNS_DIR, probe), "--", "ip", "link", "set", "lo", "up"],
                check=False,
            )
            if proc.returncode != 0:
                return "'nsenter --net' does not work here: %s" % (proc.stderr.strip() or proc.stdout.strip())
            proc = _run(["ip", "link", "add", probe, "type", "bridge"], check=False)
            if proc.returncode != 0:
                return "cannot create a bridge interface: %s" % proc.stderr.strip()
            _run(["ip", "link", "del", probe], check=False)
        finally:
            _run(["ip", "netns", "del", probe], check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return "network namespace probe failed: %s" % exc
    return None


def _used_ipv4_networks() -> List[ipaddress.IPv4Network]:
    """IPv4 networks of every address (and route) visible in the root namespace."""
    nets: List[ipaddress.IPv4Network] = []
    out = _run(["ip", "-o", "-4", "addr", "show"]).stdout
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            cidr = fields[fields.index("inet") + 1]
            nets.append(ipaddress.ip_interface(cidr).network)
    out = _run(["ip", "-4", "route", "show", "table", "all"], check=False).stdout
    for line in out.splitlines():
        fields = line.split()
        if not fields:
            continue
        route_types = ("local", "broadcast", "unicast", "unreachable", "blackhole", "prohibit",
                       "throw", "multicast", "anycast", "nat")
        dest = fields[1] if fields[0] in route_types and len(fields) > 1 else fields[0]
        if dest == "default":
            continue
        try:
            nets.append(ipaddress.ip_network(dest, strict=False))
        except ValueError:
            pass
    return nets


class HostNamespaces:
    """Several fake hosts (network namespaces) on one bridge.  Context manager.

    Attributes:
        hosts: host name -> IPv4 address (str) of that host's veth.
        bridge_ip: address of the bridge in the root namespace.
    """

    def __init__(self, names: List[str]):
        names = list(names)
        if not names:
            raise ValueError("need at least one host name")
        if len(set(names)) != len(names):
            raise ValueError("host names must be unique: %r" % (names,))
        if len(names) > 250:
            raise ValueError("at most 250 hosts fit in a /24")
        self.names: List[str] = names
        self.hosts: Dict[str, str] = {}
        self.bridge_ip: str = ""
        self.subnet: Optional[ipaddress.IPv4Network] = None
        self._procs: List[subprocess.Popen] = []
        self._new_session: Dict[int, bool] = {}
        self._closed = False
        self._created_ns: List[str] = []
        self._created_links: List[str] = []

        base = "r%x_%x" % (os.getpid(), next(_instance_counter))
        self._bridge = base + "br"
        self._ns = {n: "%sh%d" % (base, k) for k, n in enumerate(names)}
        self._veth_root = {n: "%sv%d" % (base, k) for k, n in enumerate(names)}
        self._veth_ns = {n: "%sp%d" % (base, k) for k, n in enumerate(names)}
        for ifname in [self._bridge, *self._veth_root.values(), *self._veth_ns.values()]:
            if len(ifname) > _IFNAMSIZ:
                raise ValueError("interface name too long: %s" % ifname)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        os.makedirs(os.path.dirname(_LOCK_PATH), exist_ok=True)
        with open(_LOCK_PATH, "a+") as lock:
            # Serialise subnet choice + assignment between concurrent test processes.
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self.subnet = self._pick_subnet()
                hosts_iter = self.subnet.hosts()
                self.bridge_ip = str(next(hosts_iter))  # .1
                _run(["ip", "link", "add", self._bridge, "type", "bridge"])
                self._created_links.append(self._bridge)
                _run(["ip", "addr", "add", "%s/%d" % (self.bridge_ip, self.subnet.prefixlen),
                      "dev", self._bridge])
                _run(["ip", "link", "set", self._bridge, "up"])
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

        for name in self.names:
            ip = str(next(hosts_iter))  # .2, .3, ...
            ns, vr, vn = self._ns[name], self._veth_root[name], self._veth_ns[name]
            _run(["ip", "netns", "add", ns])
            self._created_ns.append(ns)
            _run(["ip", "link", "add", vr, "type", "veth", "peer", "name", vn])
            self._created_links.append(vr)
            _run(["ip", "link", "set", vr, "master", self._bridge])
            _run(["ip", "link", "set", vr, "up"])
            _run(["ip", "link", "set", vn, "netns", ns])
            inside = ["ip", "-n", ns]
            _run(inside + ["link", "set", "lo", "up"])
            _run(inside + ["addr", "add", "%s/%d" % (ip, self.subnet.prefixlen), "dev", vn])
            _run(inside + ["link", "set", vn, "up"])
            self.hosts[name] = ip

    @staticmethod
    def _pick_subnet() -> ipaddress.IPv4Network:
        used = _used_ipv4_networks()
        # Start somewhere pid-dependent in 10.200.0.0 - 10.254.255.0 so that
        # parallel processes usually try different subnets first.
        candidates = [(a, b) for a in range(200, 255) for b in range(256)]
        start = (os.getpid() * 7919) % len(candidates)
        for i in range(len(candidates)):
            a, b = candidates[(start + i) % len(candidates)]
            net = ipaddress.ip_network("10.%d.%d.0/24" % (a, b))
            if not any(net.overlaps(u) for u in used):
                return net
        raise RuntimeError("no free 10.x.y.0/24 subnet found")

    # ------------------------------------------------------------ public API
    def netns_name(self, name: str) -> str:
        return self._ns[name]

    def netns_path(self, name: str) -> str:
        return "%s/%s" % (_NETNS_DIR, self._ns[name])

    def prefix(self, name: str) -> List[str]:
        """argv prefix that runs the rest of the command inside host `name`."""
        return ["nsenter", "--net=%s" % self.netns_path(name), "--"]

    def popen(self, name: str, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start `argv` inside host `name`'s namespace (kwargs go to Popen).

        nsenter execs the program (no fork), so the Popen's pid is the
        program's pid.  Every process started here is ended by close().
        """
        if self._closed:
            raise RuntimeError("HostNamespaces already closed")
        if name not in self._ns:
            raise KeyError(name)
        if isinstance(argv, (str, bytes)):
            raise TypeError("argv must be a list of arguments")
        proc = subprocess.Popen(self.prefix(name) + list(argv), **kwargs)
        self._procs.append(proc)
        self._new_session[proc.pid] = bool(
            kwargs.get("start_new_session") or kwargs.get("process_group") is not None
        )
        return proc

    @property
    def processes(self) -> List[subprocess.Popen]:
        """Every process started by popen() (still running or not)."""
        return list(self._procs)

    def namespace_pids(self, name: str) -> List[int]:
        """pids of all processes currently in host `name`'s network namespace."""
        if name not in self._ns or self._ns[name] not in self._created_ns:
            return []
        proc = _run(["ip", "netns", "pids", self._ns[name]], check=False)
        return [int(p) for p in proc.stdout.split() if p.isdigit() and int(p) != os.getpid()]

    def terminate_namespace_processes(self, names: Optional[Sequence[str]] = None,
                                      grace_s: float = 5.0) -> None:
        """SIGTERM (then SIGKILL after grace_s) every process in the given hosts'
        namespaces, including ones not started via popen (e.g. daemonised children)."""
        names = list(self._ns) if names is None else list(names)
        pids = [p for n in names for p in self.namespace_pids(n)]
        _signal_and_wait(pids, [], grace_s, self._procs)
        for n in names:  # stragglers that appeared meanwhile
            _signal_and_wait(self.namespace_pids(n), [], 1.0, self._procs)

    # --------------------------------------------------------------- cleanup
    def close(self) -> None:
        """End all started processes, delete namespaces, veths and bridge.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        groups = [p.pid for p in self._procs if self._new_session.get(p.pid)]
        _signal_and_wait([p.pid for p in self._procs if p.poll() is None], groups, 5.0, self._procs)
        for p in self._procs:
            try:
                p.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
        # Anything left in the namespaces (grandchildren that escaped their group).
        try:
            self.terminate_namespace_processes(grace_s=3.0)
        except Exception:
            pass
        for ns in self._created_ns:
            _run(["ip", "netns", "del", ns], check=False)
        for link in self._created_links:
            # Deleting the namespace removed the veth pair already; the bridge stays.
            if _run(["ip", "link", "show", link], check=False).returncode == 0:
                _run(["ip", "link", "del", link], check=False)
        self._created_ns = []
        self._created_links = []

    def __enter__(self) -> "HostNamespaces":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # last resort; close() is idempotent
        try:
            self.close()
        except Exception:
            pass


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            # field 3 (after the parenthesised comm) is the state; Z = zombie
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


def _send(pids: Sequence[int], groups: Sequence[int], sig: int) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # killpg(0) succeeds on zombies too; look for a live member.
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and _alive(int(entry)):
                    return True
            except OSError:
                pass
    return False


def _signal_and_wait(pids: Sequence[int], groups: Sequence[int], grace_s: float,
                     popens: Sequence[subprocess.Popen] = ()) -> None:
    """SIGTERM pids and process groups; SIGKILL whatever is still alive after grace_s.

    Zombies count as gone; `popens` (our own children) are reaped meanwhile."""
    pids, groups = list(pids), list(groups)
    if not pids and not groups:
        return
    _send(pids, groups, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap(popens)
        if not any(_alive(p) for p in pids) and not any(_group_alive(g) for g in groups):
            return
        time.sleep(0.05)
    _send([p for p in pids if _alive(p)], [g for g in groups if _group_alive(g)], signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        _reap(popens)
        if not any(_alive(p) for p in pids):
            return
        time.sleep(0.05)


def _reap(popens: Sequence[subprocess.Popen]) -> None:
    """Collect our own exited children (only these: never waitpid(-1))."""
    for p in popens:
        try:
            p.poll()
        except OSError:
            pass
