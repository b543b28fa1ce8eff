"""A real, private SLURM cluster on this machine, for tests.

``SlurmCluster(workdir, hosts)`` runs munged and slurmctld in the root network
namespace and one slurmd per fake host of a ``HostNamespaces`` (each slurmd
inside its host's namespace, with ``slurmd -N <host>``).  Everything (config,
munge key and socket, state, spool, logs, pid files) lives under ``workdir``;
nothing in /etc is read or written.  Commands such as sbatch/squeue/scancel are
run from the root namespace with ``cluster.env`` (which sets SLURM_CONF).

``unavailable_reason()`` says why such a cluster cannot run here (for
``pytest.skip``).
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Dict, Iterable, List, Optional, Sequence

from experiments.testbed import netns_hosts as _netns_hosts

HostNamespaces = _netns_hosts.HostNamespaces

__all__ = ["SlurmCluster", "unavailable_reason"]

_DAEMONS = ("slurmctld", "slurmd", "munged")
_CLIENTS = ("sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo")
# UNIX socket paths (munge socket, slurmstepd sockets in the spool dir) are
# limited to 107 bytes; longer work dirs get their sockets in a short temp dir.
_MAX_SOCKET_DIR_LEN = 60


def _which(name: str) -> Optional[str]:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


def unavailable_reason() -> Optional[str]:
    """None when a SlurmCluster can run here, else a readable reason."""
    missing = [n for n in _DAEMONS + _CLIENTS if _which(n) is None]
    if missing:
        return ("SLURM/munge tools missing (%s); run scripts/install_cluster_tools.sh"
                % ", ".join(missing))
    return _netns_hosts.unavailable_reason()


def _free_port(host: str = "") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tail(path: pathlib.Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return "(cannot read %s: %s)" % (path, exc)
    return "\n".join(text[-lines:])


class SlurmCluster:
    """munged + slurmctld + one slurmd per host of `hosts`.  Context manager."""

    def __init__(self, workdir: pathlib.Path, hosts: "HostNamespaces",
                 cpus_per_host: int = 2, memory_mb_per_host: int = 4000):
        self.workdir = pathlib.Path(workdir).resolve()
        self.hosts = hosts
        self.cpus_per_host = int(cpus_per_host)
        self.memory_mb_per_host = int(memory_mb_per_host)
        self.node_names: List[str] = list(hosts.hosts)
        self._procs: Dict[str, subprocess.Popen] = {}
        self._logfiles = []
        self._short_dir: Optional[str] = None
        self._closed = False

        self.workdir.mkdir(parents=True, exist_ok=True)
        if len(str(self.workdir)) > _MAX_SOCKET_DIR_LEN:
            self._short_dir = tempfile.mkdtemp(prefix="rls-", dir="/tmp")
            sock_dir = pathlib.Path(self._short_dir)
        else:
            sock_dir = self.workdir
        self.munge_socket = sock_dir / "munge.sock"
        self.spool_dir = sock_dir / "spool"
        self.state_dir = self.workdir / "state"
        self.log_dir = self.workdir / "log"
        self.conf_path = self.workdir / "slurm.conf"
        self.controller_host = socket.gethostname().split(".")[0]
        self.controller_port = _free_port()
        self.node_ports = {n: _free_port() for n in self.node_names}
        self.env: Dict[str, str] = dict(os.environ)
        self.env["SLURM_CONF"] = str(self.conf_path)
        for var in [v for v in self.env if v.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))]:
            if var != "SLURM_CONF":  # do not inherit settings of an outer SLURM job
                del self.env[var]
        try:
            self._write_files()
            self._start()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ files
    def _write_files(self) -> None:
        for d in (self.state_dir, self.log_dir, self.spool_dir):
            d.mkdir(parents=True, exist_ok=True)
        for n in self.node_names:
            (self.spool_dir / n).mkdir(exist_ok=True)
        key = self.workdir / "munge.key"
        if not key.exists():
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(1024))
        os.chmod(key, 0o600)
        self.munge_key = key
        self.conf_path.write_text(self.slurm_conf())

    def slurm_conf(self) -> str:
        wd, log = self.workdir, self.log_dir
        lines = [
            "ClusterName=relaytest",
            "SlurmctldHost=%s(%s)" % (self.controller_host, self.hosts.bridge_ip),
            "SlurmctldPort=%d" % self.controller_port,
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "AuthInfo=socket=%s" % self.munge_socket,
            "CredType=cred/munge",
            "StateSaveLocation=%s" % self.state_dir,
            "SlurmdSpoolDir=%s/%%n" % self.spool_dir,
            "SlurmctldPidFile=%s/slurmctld.pid" % wd,
            "SlurmdPidFile=%s/slurmd.%%n.pid" % wd,
            "SlurmctldLogFile=%s/slurmctld.log" % log,
            "SlurmdLogFile=%s/slurmd.%%n.log" % log,
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=bf_interval=1",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",
            "MinJobAge=600",
            # SLURM's default: on a loaded machine a learner's stop (final checkpoint, summary)
            # has been seen to take over 10 s.
            "KillWait=30",
            "InactiveLimit=0",
            "SlurmdTimeout=60",
            "MailProg=/bin/true",
        ]
        for n in self.node_names:
            lines.append(
                "NodeName=%s NodeAddr=%s NodeHostname=%s CPUs=%d RealMemory=%d Port=%d State=UNKNOWN"
                % (n, self.hosts.hosts[n], n, self.cpus_per_host, self.memory_mb_per_host,
                   self.node_ports[n]))
        lines.append("PartitionName=relay Nodes=ALL Default=YES MaxTime=INFINITE "
                     "State=UP OverSubscribe=YES")
        return "\n".join(lines) + "\n"

    # ---------------------------------------------------------------- daemons
    def _log(self, name: str):
        f = open(self.log_dir / ("%s.stdout" % name), "ab")
        self._logfiles.append(f)
        return f

    def _start(self) -> None:
        munged = [
            _which("munged"), "-F", "--force",
            "--socket=%s" % self.munge_socket,
            "--key-file=%s" % self.munge_key,
            "--pid-file=%s" % (self.workdir / "munged.pid"),
            "--log-file=%s" % (self.log_dir / "munged.log"),
            "--seed-file=%s" % (self.workdir / "munged.seed"),
            "--num-threads=4",
        ]
        out = self._log("munged")
        self._procs["munged"] = subprocess.Popen(
            munged, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_for(lambda: self.munge_socket.exists(), 20.0, "munged socket")

        out = self._log("slurmctld")
        self._procs["slurmctld"] = subprocess.Popen(
            [_which("slurmctld"), "-D", "-c", "-f", str(self.conf_path)],
            env=self.env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)

        for n in self.node_names:
            out = self._log("slurmd.%s" % n)
            self._procs["slurmd.%s" % n] = self.hosts.popen(
                n, [_which("slurmd"), "-D", "-N", n, "-f", str(self.conf_path)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)

    def _wait_for(self, predicate, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_daemons()
            if predicate():
                return
            if time.monotonic() > deadline:
                raise TimeoutError("timed out after %.0fs waiting for %s\n%s"
                                   % (timeout_s, what, self.log_tails()))
            time.sleep(0.1)

    def _check_daemons(self) -> None:
        dead = {k: p.returncode for k, p in self._procs.items() if p.poll() is not None}
        if dead:
            raise RuntimeError("SLURM daemon(s) exited: %s\n%s" % (dead, self.log_tails()))

    # ------------------------------------------------------------ public API
    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 30.0,
            **kwargs) -> subprocess.CompletedProcess:
        """Run a SLURM client command from the root namespace with self.env."""
        proc = subprocess.run(list(argv), env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout, **kwargs)
        if check and proc.returncode != 0:
            raise RuntimeError("%s failed (rc=%d): %s%s\n%s" % (
                " ".join(argv), proc.returncode, proc.stdout, proc.stderr, self.log_tails()))
        return proc

    def node_states(self) -> Dict[str, str]:
        """node name -> state as shown by sinfo (e.g. 'idle', 'down*', 'mixed')."""
        proc = self.run(["sinfo", "-h", "-N", "-o", "%N %T"], check=False)
        states: Dict[str, str] = {}
        if proc.returncode == 0:
            for line in proc.stdout.splitlines():
                parts = line.split()
                if len(parts) == 2:
                    states[parts[0]] = parts[1]
        return states

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until every node is idle."""
        def ready() -> bool:
            states = self.node_states()
            return all(states.get(n, "").lower() == "idle" for n in self.node_names)
        try:
            self._wait_for(ready, timeout_s, "all nodes idle")
        except TimeoutError as exc:
            raise TimeoutError("%s\nlast node states: %s" % (exc, self.node_states())) from None

    def job_info(self, job_id) -> str:
        proc = self.run(["scontrol", "show", "job", "-o", str(job_id)], check=False)
        return proc.stdout if proc.returncode == 0 else proc.stderr

    def job_state(self, job_id) -> str:
        """State of the job (for a heterogeneous job: of its leader component),
        e.g. PENDING, RUNNING, COMPLETED, CANCELLED, FAILED; UNKNOWN if slurmctld
        does not know the job (any more)."""
        job_id = str(job_id).split(";")[0].strip()
        proc = self.run(["scontrol", "show", "job", "-o", job_id], check=False)
        if proc.returncode != 0:
            return "UNKNOWN"
        lines = [l for l in proc.stdout.splitlines() if "JobState=" in l]
        for line in lines:
            jid = re.search(r"\bJobId=(\S+)", line)
            if jid and jid.group(1) == job_id:
                return re.search(r"\bJobState=(\S+)", line).group(1)
        if lines:
            return re.search(r"\bJobState=(\S+)", lines[0]).group(1)
        return "UNKNOWN"

    def wait_job(self, job_id, states: Iterable[str], timeout_s: float = 60.0) -> str:
        """Poll until the job's state is one of `states`; returns that state."""
        wanted = {s.upper() for s in ([states] if isinstance(states, str) else states)}
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.job_state(job_id)
            if state in wanted:
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(
                    "job %s is %s, not in %s after %.0fs\n%s\n%s"
                    % (job_id, state, sorted(wanted), timeout_s, self.job_info(job_id),
                       self.log_tails()))
            self._check_daemons()
            time.sleep(0.2)

    def log_tails(self, lines: int = 30) -> str:
        parts = []
        files = sorted(self.log_dir.glob("*")) if self.log_dir.exists() else []
        for f in files:
            parts.append("==> %s <==\n%s" % (f, _tail(f, lines)))
        return "\n".join(parts)

    # --------------------------------------------------------------- cleanup
    def close(self) -> None:
        """Cancel all jobs, stop every daemon, leave no processes behind.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        ctld = self._procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            try:
                self._cancel_all_jobs()
            except Exception:
                pass
        slurmds = [p for k, p in self._procs.items() if k.startswith("slurmd.")]
        _stop(slurmds, grace_s=5.0)
        # slurmstepd and job processes are not children of slurmd's group.
        try:
            self.hosts.terminate_namespace_processes(self.node_names, grace_s=3.0)
        except Exception:
            pass
        _stop([p for p in [ctld] if p is not None], grace_s=5.0)
        munged = self._procs.get("munged")
        _stop([p for p in [munged] if p is not None], grace_s=5.0)
        for f in self._logfiles:
            try:
                f.close()
            except OSError:
                pass
        self._logfiles = []
        if self._short_dir:
            shutil.rmtree(self._short_dir, ignore_errors=True)
            self._short_dir = None

    def _cancel_all_jobs(self) -> None:
        proc = self.run(["squeue", "-h", "-o", "%A"], check=False, timeout=15)
        ids = proc.stdout.split() if proc.returncode == 0 else []
        if not ids:
            return
        self.run(["scancel"] + ids, check=False, timeout=15)
        deadline = time.monotonic() + 40.0  # > KillWait
        while time.monotonic() < deadline:
            proc = self.run(["squeue", "-h", "-o", "%A %T"], check=False, timeout=15)
            if proc.returncode != 0 or not proc.stdout.strip():
                return
            time.sleep(0.2)

    def __enter__(self) -> "SlurmCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _stop(procs: Sequence[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM each process (and its process group), SIGKILL after grace_s."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        _killpg_or_kill(p.pid, 15)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(p.poll() is None for p in live):
        time.sleep(0.05)
    for p in live:
        if p.poll() is None:
            _killpg_or_kill(p.pid, 9)
        try:
            p.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            pass
    # Children left in the daemons' groups (started with start_new_session).
    for p in procs:
        try:
            os.killpg(p.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass


def _killpg_or_kill(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
