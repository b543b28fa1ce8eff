"""Node processes started by the launcher itself: `--launch_type=local_mp` (every node on this
machine) and `--launch_type=hosts` (across hosts, without a scheduler).

For hosts, the cluster spec names each component's hosts and a command template that runs
a command on a host (`ssh {host} cd /path/to/relay &&`). Every node is one
`launch.runtime.entry` process: the counter first, then the rest with its address (on this
machine the launcher picks the counter's port, and all start at once). The launcher keeps
each node's local process (the ssh client, or the node itself); its log goes to
RUN_DIR/logs[/launch_k]/<group>/<index>. Each node's process is its supervisor, which
restarts it if it dies (`launch.runtime.supervisor`); `launch.runtime.watch` watches them,
and a supervisor that is lost itself (SIGKILLed, or the ssh to its host cut) is started again
on its host at the same port (`HostsLaunch.relaunch`). Where that host does not answer (the
template's `true` fails), a node no other node connects to (an actor, the evaluator, the
monitor, the loader) moves to the next host of its component that does.
"""

import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Dict, Optional

from launch.nodes import rpc
from launch.rundir.paths import RunPaths
from launch.runtime import cluster, entry, ports
from launch.runtime.launch_files import ROOT, entry_argv, write_launch
from launch.runtime.relaunch import Relaunches
from launch.runtime.supervisor import RestartPolicy, describe_exit


# Nodes the others hold clients of, at the address they registered: these start again on their
# own host only.
SERVING_GROUPS = ("counter", "replay", "learner")


def local_spec() -> cluster.ClusterSpec:
    """Every group on this machine (local_mp)."""
    return cluster.ClusterSpec(components=(cluster.Component(groups=cluster.PROGRAM_GROUPS + ("loader",),
                                                             hosts=(cluster.Host("localhost", "localhost"),)),))


class HostsLaunch:
    """The program's node processes, started through the spec's command template.

    `processes`: "node <group>/<index>" -> its local process."""

    def __init__(self, program, spec: cluster.ClusterSpec, run_dir: str, launch_index: int = 0,
                 restarts: RestartPolicy = RestartPolicy(), answer_timeout_s: float = 20.0):
        spec.check_program(cluster.PROGRAM_GROUPS, need_hosts=True)
        self._spec = spec
        self._sizes = {label: len(nodes) for label, nodes in program.groups.items()}
        self._launch_dir = write_launch(program, spec, run_dir, launch_index, restarts)
        self._restarts = restarts
        self._relaunches = Relaunches(restarts, self._launch_dir, lambda: self.coordinator)
        self._paths, self._launch_index = RunPaths(run_dir), launch_index
        self.processes: Dict[str, subprocess.Popen] = {}
        self.coordinator: Optional[str] = None
        self._moved: Dict[str, cluster.Host] = {}  # "actor/1" -> the host it moved to
        self._answer_timeout_s = answer_timeout_s

    def log_path(self, name: str) -> str:
        """The log of "node <group>/<index>"."""
        label, index = name.split(" ")[-1].split("/")
        return self._paths.node_log(self._launch_index, label, int(index))

    def _host(self, label: str, index: int) -> cluster.Host:
        return self._moved.get(f"{label}/{index}") or self._spec.host_of(label, index)

    def answers(self, host: cluster.Host) -> bool:
        """Whether the template runs a command on `host` (`true`, within answer_timeout_s)."""
        if not self._spec.command_template:
            return True
        template = self._spec.command_template.format(host=host.name, address=host.address)
        try:
            return subprocess.run(f"{template} true", shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=self._answer_timeout_s).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _answering_host(self, label: str, index: int) -> cluster.Host:
        """The node's host if it answers; else, for a node no other connects to, the next host of
        its component that does (the node moves there); else its host all the same."""
        host = self._host(label, index)
        if label in SERVING_GROUPS or self.answers(host):
            return host
        hosts = self._spec.components[self._spec.component_of(label)].hosts
        start = hosts.index(host) if host in hosts else 0
        for other in hosts[start + 1:] + hosts[:start]:
            if self.answers(other):
                print(f"relay launcher: {host.name} does not answer; node {label}/{index} moves to {other.name}",
                      file=sys.stderr, flush=True)
                self._moved[f"{label}/{index}"] = other
                return other
        print(f"relay launcher: no host of node {label}/{index}'s component answers; starting it on {host.name} "
              "all the same", file=sys.stderr, flush=True)
        return host

    def _start(self, label: str, index: int, port: Optional[int] = None, relaunched: bool = False,
               host: Optional[cluster.Host] = None) -> subprocess.Popen:
        host = host or self._host(label, index)
        argv = entry_argv(self._launch_dir, f"{label}/{index}", host.address, self.coordinator, port=port,
                          relaunched=relaunched)
        name = f"node {label}/{index}"
        os.makedirs(os.path.dirname(self.log_path(name)), exist_ok=True)
        options = dict(cwd=ROOT, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": ROOT})
        with open(self.log_path(name), "ab") as log:
            if self._spec.command_template:
                # Its own session: the template's processes (ssh) are stopped as one group.
                template = self._spec.command_template.format(host=host.name, address=host.address)
                process = subprocess.Popen(f"{template} {shlex.join(argv)}", shell=True, stdout=log,
                                           start_new_session=True, **options)
            else:
                # The launcher's process group: Ctrl-C in a terminal reaches every node's supervisor,
                # which hands it on, as with Launchpad.
                process = subprocess.Popen(argv, stdout=log, **options)
        self.processes[name] = process
        return process

    def start(self, timeout_s: float = 300.0) -> None:
        """Starts the counter and, once its address is known, every other node."""
        if not self._spec.command_template:
            # On this machine the launcher picks the counter's port: everyone starts at once.
            port = ports.reserve_port()  # held by the launcher until it exits
            self.coordinator = f"{self._spec.host_of('counter', 0).address}:{port}"
            self._start("counter", 0, port=port)
        else:
            counter = self._start("counter", 0)
            try:
                self.coordinator = entry.wait_for_coordinator(self._launch_dir, timeout_s,
                                                              alive=lambda: counter.poll() is None)
            except TimeoutError:
                self.terminate(force=True)
                raise RuntimeError(f"The counter node did not start; its log: {self.log_path('node counter/0')}") from None
        for label, size in self._sizes.items():
            for index in range(size):
                if label != "counter":
                    self._start(label, index)

    def relaunch(self, name: str, code: int) -> bool:
        """Starts the supervisor of `name` ("node <group>/<index>") again after it was lost (its
        process ended with `code`: a SIGKILL, its host gone) while the program runs: at the port
        it served at, its node going on as a restarted one, within the same restart policy as a
        node's process. False when it is not started again: the program is stopping, or the
        node is past its budget (the watch then stops the run, naming it)."""
        label, index = name.split(" ")[-1].split("/")
        node = f"{label}/{index}"
        if not self._relaunches.allow(f"node {node}", counter_lost=node == "counter/0"):
            return False
        before = self._host(label, int(index))
        host = self._answering_host(label, int(index))
        address = self.coordinator if label == "counter" else self._relaunches.registered_address(node)
        port = int(address.rpartition(":")[2]) if address and host == before else None
        self._start(label, int(index), port=port, relaunched=True, host=host)
        self._relaunches.record(node, code, self.log_path(name), None if host == before else
                                f"its supervisor ended ({describe_exit(code)}) and its host {before.name} did not "
                                f"answer; started again on {host.name}")
        return True

    def request_stop(self, reason: str) -> bool:
        """Asks the counter to stop the program; False if it does not answer (three tries)."""
        return rpc.ask_to_stop(self.coordinator, reason)

    def _running(self) -> list:
        return [process for process in self.processes.values() if process.poll() is None]

    def terminate(self, force: bool = False, grace_s: float = 15.0) -> None:
        """SIGTERM to every node process still running, SIGKILL after `grace_s` (at once if `force`)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for process in self._running():
                try:
                    if self._spec.command_template:
                        os.killpg(process.pid, sig)
                    else:
                        process.send_signal(sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + (0.0 if force and sig == signal.SIGTERM else grace_s if sig == signal.SIGTERM else 5.0)
            while self._running() and time.time() < deadline:
                time.sleep(0.2)
            if not self._running():
                return
