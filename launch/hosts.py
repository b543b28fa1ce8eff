"""`--launch_type=hosts`: a program across hosts without a scheduler.

The cluster spec names each component's hosts and a command template that runs a command
on a host (`ssh {host} cd /path/to/relay &&`). Every node is one `launch.entry` process
started through the template: the counter first, then the rest with its address. The
launcher keeps each node's local process (the ssh client, or the node itself), its log
goes to RUN_DIR/logs[/launch_k]/<group>/<index>.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Dict, Optional, Tuple

from launch import cluster, entry, launching

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def entry_argv(launch_dir: str, node: str, host: Optional[str] = None, coordinator: Optional[str] = None,
               index_env: Optional[str] = None, python: str = sys.executable) -> list:
    """The command line of `launch.entry` for one node (or one group, with `index_env`)."""
    argv = [python, "-m", "launch.entry", f"--launch_dir={launch_dir}", f"--node={node}"]
    if host:
        argv.append(f"--host={host}")
    if coordinator:
        argv.append(f"--coordinator={coordinator}")
    if index_env:
        argv.append(f"--index_env={index_env}")
    return argv


def write_launch(program, spec: cluster.ClusterSpec, run_dir: str, launch_index: int) -> str:
    """The launch directory with the pickled program and the cluster spec; returns its path."""
    launch_dir = launching.launch_dir(run_dir, launch_index)
    if os.path.exists(os.path.join(launch_dir, entry.PROGRAM_FILE)):
        raise ValueError(f"{launch_dir} already holds a launch of this run; launches are never overwritten.")
    entry.write_program(program, launch_dir)
    with open(os.path.join(launch_dir, entry.CLUSTER_FILE), "w") as file:
        json.dump(cluster.to_json(spec), file, indent=2)
    return launch_dir


class HostsLaunch:
    """The program's node processes, started through the spec's command template."""

    def __init__(self, program, spec: cluster.ClusterSpec, run_dir: str, launch_index: int = 0):
        sizes = {label: len(nodes) for label, nodes in program.groups.items()}
        spec.check_program(sizes, need_hosts=True)
        self._spec = spec
        self._sizes = sizes
        self._launch_dir = write_launch(program, spec, run_dir, launch_index)
        self._logs_dir = launching.logs_dir(run_dir, launch_index)
        self.processes: Dict[Tuple[str, int], subprocess.Popen] = {}
        self.coordinator: Optional[str] = None

    def log_path(self, label: str, index: int) -> str:
        return os.path.join(self._logs_dir, label, str(index))

    def _start(self, label: str, index: int) -> subprocess.Popen:
        host = self._spec.host_of(label, index)
        command = shlex.join(entry_argv(self._launch_dir, f"{label}/{index}", host.address, self.coordinator))
        template = self._spec.command_template.format(host=host.name, address=host.address)
        os.makedirs(os.path.dirname(self.log_path(label, index)), exist_ok=True)
        with open(self.log_path(label, index), "ab") as log:
            process = subprocess.Popen(f"{template} {command}" if template else command, shell=True, cwd=ROOT,
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env={**os.environ, "PYTHONPATH": ROOT}, start_new_session=True)
        self.processes[(label, index)] = process
        return process

    def start(self, timeout_s: float = 300.0) -> None:
        """Starts the counter, waits for its address, then starts every other node."""
        counter = self._start("counter", 0)
        try:
            self.coordinator = entry.wait_for_coordinator(self._launch_dir, timeout_s, alive=lambda: counter.poll() is None)
        except TimeoutError:
            self.terminate()
            raise RuntimeError(f"The counter node did not start; its log: {self.log_path('counter', 0)}") from None
        for label, size in self._sizes.items():
            for index in range(size):
                if label != "counter":
                    self._start(label, index)

    def running(self) -> bool:
        return any(process.poll() is None for process in self.processes.values())

    def failed(self) -> Dict[str, int]:
        """Nodes whose process ended with an error: "group/index" -> exit code."""
        return {f"{label}/{index}": process.returncode for (label, index), process in self.processes.items()
                if process.poll() not in (None, 0)}

    def request_stop(self, reason: str) -> bool:
        """Asks the counter to stop the program; False if it does not answer."""
        import courier

        try:
            courier.Client(self.coordinator, call_timeout=2.0).request_stop(reason)
            return True
        except Exception:  # gone, or never started
            return False

    def wait(self, timeout_s: Optional[float] = None) -> bool:
        """Waits for every node process to end; False on timeout."""
        deadline = None if timeout_s is None else time.time() + timeout_s
        while self.running():
            if deadline is not None and time.time() > deadline:
                return False
            time.sleep(0.2)
        return True

    def terminate(self, grace_s: float = 15.0) -> None:
        """SIGTERM to every node process still running (its process group), SIGKILL after `grace_s`."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for process in self.processes.values():
                if process.poll() is None:
                    try:
                        os.killpg(process.pid, sig)
                    except ProcessLookupError:
                        pass
            if sig == signal.SIGTERM and self.wait(grace_s):
                return
        self.wait(5.0)
