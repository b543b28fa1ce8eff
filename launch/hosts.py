"""Node processes started by the launcher itself: `--launch_type=local_mp` (every node on this
machine) and `--launch_type=hosts` (across hosts, without a scheduler).

For hosts, the cluster spec names each component's hosts and a command template that runs
a command on a host (`ssh {host} cd /path/to/relay &&`). Every node is one `launch.entry`
process: the counter first, then the rest with its address (on this machine the launcher
picks the counter's port, and all start at once). The launcher keeps each node's local
process (the ssh client, or the node itself); its log goes to
RUN_DIR/logs[/launch_k]/<group>/<index>. Each node's process is its supervisor, which
restarts it if it dies (`launch.supervisor`); a supervisor that gives up stops the program.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Dict, Optional, Tuple

from launch import cluster, entry, launching, ports, rpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def entry_argv(launch_dir: str, node: str, host: Optional[str] = None, coordinator: Optional[str] = None,
               index_env: Optional[str] = None, python: str = sys.executable, port: Optional[int] = None) -> list:
    """The command line of `launch.entry` for one node (or one group, with `index_env`)."""
    argv = [python, "-m", "launch.entry", f"--launch_dir={launch_dir}", f"--node={node}"]
    for name, value in (("host", host), ("coordinator", coordinator), ("index_env", index_env), ("port", port)):
        if value:
            argv.append(f"--{name}={value}")
    return argv


def local_spec() -> cluster.ClusterSpec:
    """Every group on this machine (local_mp)."""
    return cluster.ClusterSpec(components=(cluster.Component(groups=cluster.PROGRAM_GROUPS + ("loader",),
                                                             hosts=(cluster.Host("localhost", "localhost"),)),))


def write_launch(program, spec: cluster.ClusterSpec, run_dir: str, launch_index: int, max_restarts: int = 0) -> str:
    """The launch directory with the pickled program, the cluster spec and each node's restart
    budget; returns its path."""
    launch_dir = launching.launch_dir(run_dir, launch_index)
    if os.path.exists(os.path.join(launch_dir, entry.PROGRAM_FILE)):
        raise ValueError(f"{launch_dir} already holds a launch of this run; launches are never overwritten.")
    entry.write_program(program, launch_dir, max_restarts)
    with open(os.path.join(launch_dir, entry.CLUSTER_FILE), "w") as file:
        json.dump(cluster.to_json(spec), file, indent=2)
    return launch_dir


class HostsLaunch:
    """The program's node processes, started through the spec's command template."""

    def __init__(self, program, spec: cluster.ClusterSpec, run_dir: str, launch_index: int = 0, max_restarts: int = 0):
        sizes = {label: len(nodes) for label, nodes in program.groups.items()}
        spec.check_program(cluster.PROGRAM_GROUPS, need_hosts=True)
        self._spec = spec
        self._sizes = sizes
        self._launch_dir = write_launch(program, spec, run_dir, launch_index, max_restarts)
        self._logs_dir = launching.logs_dir(run_dir, launch_index)
        self.processes: Dict[Tuple[str, int], subprocess.Popen] = {}
        self.coordinator: Optional[str] = None
        self._stopping_for_failure = False

    def log_path(self, label: str, index: int) -> str:
        return os.path.join(self._logs_dir, label, str(index))

    def _start(self, label: str, index: int, port: Optional[int] = None) -> subprocess.Popen:
        host = self._spec.host_of(label, index)
        argv = entry_argv(self._launch_dir, f"{label}/{index}", host.address, self.coordinator, port=port)
        os.makedirs(os.path.dirname(self.log_path(label, index)), exist_ok=True)
        options = dict(cwd=ROOT, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": ROOT})
        with open(self.log_path(label, index), "ab") as log:
            if self._spec.command_template:
                # Its own session: the template's processes (ssh) are stopped as one group.
                template = self._spec.command_template.format(host=host.name, address=host.address)
                process = subprocess.Popen(f"{template} {shlex.join(argv)}", shell=True, stdout=log,
                                           start_new_session=True, **options)
            else:
                # The launcher's process group: Ctrl-C in a terminal reaches every node's supervisor,
                # which hands it on, as with Launchpad.
                process = subprocess.Popen(argv, stdout=log, **options)
        self.processes[(label, index)] = process
        return process

    def start(self, timeout_s: float = 300.0) -> None:
        """Starts the counter and, once its address is known, every other node."""
        if not self._spec.command_template:
            # On this machine the launcher picks the counter's port: everyone starts at once.
            port = ports.reserve_port()  # held by the launcher until it exits
            self.coordinator = f"{self._spec.host_of('counter', 0).address}:{port}"
            counter = self._start("counter", 0, port=port)
        else:
            counter = self._start("counter", 0)
            try:
                self.coordinator = entry.wait_for_coordinator(self._launch_dir, timeout_s,
                                                              alive=lambda: counter.poll() is None)
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
        """Asks the counter to stop the program; False if it does not answer (three tries)."""
        try:
            rpc.final_client(self.coordinator, call_timeout_s=2.0).request_stop(reason)
            return True
        except Exception:  # gone, or never started
            return False

    def wait(self, timeout_s: Optional[float] = None) -> bool:
        """Waits for every node process to end; False on timeout. A node that fails stops the
        program (the others stop as at the step limit)."""
        deadline = None if timeout_s is None else time.time() + timeout_s
        while self.running():
            if deadline is not None and time.time() > deadline:
                return False
            failed = self.failed()
            if failed and not self._stopping_for_failure:
                self._stopping_for_failure = True
                node, code = next(iter(failed.items()))
                print(f"\nNode {node} exited with code {code} (log: {self.log_path(*node.split('/'))}); "
                      "stopping the program.", file=sys.stderr, flush=True)
                if not self.request_stop(f"node {node} exited with code {code}"):
                    self.terminate()  # the counter itself is gone: nobody else can stop them
            time.sleep(0.2)
        return True

    def terminate(self, grace_s: float = 15.0) -> None:
        """SIGTERM to every node process still running, SIGKILL after `grace_s`."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for process in self.processes.values():
                if process.poll() is None:
                    try:
                        if self._spec.command_template:
                            os.killpg(process.pid, sig)
                        else:
                            process.send_signal(sig)
                    except ProcessLookupError:
                        pass
            if sig == signal.SIGTERM and self.wait(grace_s):
                return
        self.wait(5.0)
