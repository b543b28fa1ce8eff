"""One node of a program in this process: the entry point of every multi-node launch type.

    python -m launch.runtime.entry --launch_dir=RUN/launches/K --node=actor/1 --host=10.0.0.3 --coordinator=10.0.0.2:41234
    python -m launch.runtime.entry --launch_dir=RUN/launches/K --node=counter/0 --host=10.0.0.2   (serves as coordinator)

The launcher pickles the program once (`write_program`), node by node; every node process
loads its own node and runs it. The counter node is the coordinator: it is started first, reserves
its own port and writes its address to LAUNCH_DIR/coordinator; whoever starts the other
nodes hands that address to them on the command line. Every other node reserves a port
on its host (launch.runtime.ports), registers host:port with the counter, and finds the nodes it calls
by asking the counter (`RegistryAddressBuilder`). The stop goes through the counter
too: `lp.stop()` asks it to stop the program, and each process polls it and stops
itself as on one machine (SIGTERM to itself: the same path as a local stop).

Each such process is the node's supervisor (`launch.runtime.supervisor`): it reserves the node's
port, runs the node in a child process (`--attempt=K`), and starts it again if it dies.
"""

import faulthandler
import os
import signal
import sys
import threading
import time
import traceback

from absl import app, flags

from launch import faults
from launch.faults import disk_full
from launch.nodes import launchpad_internals, rpc
from launch.nodes.process import ATTEMPT_ENV, CPU_ONLY_ENV, node_attempt
from launch.rundir.jsonio import read_json
from launch.rundir.paths import CLUSTER_FILE, COORDINATOR_FILE, JOB_FILE, SUPERVISION_FILE, run_dir_of_launch
from launch.runtime import ports, supervisor

_LAUNCH_DIR = flags.DEFINE_string("launch_dir", None, "the launch's directory (program.pkl)")
_NODE = flags.DEFINE_string("node", None, "group/index of the node to run; group only: index from --index_env")
_INDEX_ENV = flags.DEFINE_string("index_env", None, "environment variable with the node's index (SLURM_PROCID)")
_HOST = flags.DEFINE_string("host", None, "this host's address as other hosts reach it; default in a SLURM "
                            "step: $SLURMD_NODENAME's NodeAddr")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "host:port of the counter node (all nodes but the counter)")
_ATTEMPT = flags.DEFINE_integer("attempt", None, "set by the node's supervisor in the node's own process: how many "
                                 "times it was restarted; unset: this process is the supervisor")
_RELAUNCHED = flags.DEFINE_bool("relaunched", False, "set by a launcher that starts a node's supervisor again after "
                                "losing it (or its host): the node goes on from its earlier processes' attempts")
_PORT = flags.DEFINE_integer("port", None, "the port this node serves at (a launcher on the counter's host reserves "
                             "the counter's, so that every node starts at once); default: one reserved on this host "
                             "(launch.runtime.ports)")

# How long a node waits for the counter, and for a node it calls to register, before giving up.
_FIND_TIMEOUT_S = 300.0
# A node whose counter stays unreachable this long stops itself (the program is gone).
_COUNTER_LOST_S = 60.0
# A supervisor waits this long for a counter that does not answer (one restarting is back
# in ~6 s) before it takes the program for gone.
_COUNTER_RESTART_S = 30.0
# Under a SLURM job a counter lost with its host is found only `lost_after_s` later, and comes
# back as a new step: its nodes wait that long more than this.
_COUNTER_NEW_STEP_S = 120.0


def counter_patience_s(launch_dir: str) -> tuple:
    """(lost, restart): how long a node waits for a counter that does not answer before it stops
    itself, and a supervisor before it takes the program for gone: `_COUNTER_LOST_S` and
    `_COUNTER_RESTART_S`, and in a heterogeneous SLURM job (whose driver starts a lost counter's
    step again) long enough for the job to find the counter lost and start it again."""
    spec = read_json(os.path.join(launch_dir, CLUSTER_FILE)) if os.path.exists(os.path.join(launch_dir, JOB_FILE)) else None
    slurm = (spec or {}).get("slurm") or {}  # as the launcher wrote it (cluster.to_json: every field)
    if not slurm.get("heterogeneous") or slurm.get("lost_after_s") is None:
        return _COUNTER_LOST_S, _COUNTER_RESTART_S  # no job that starts a lost counter again: local_mp, hosts
    lost_after_s = slurm["lost_after_s"]
    extra = lost_after_s + _COUNTER_NEW_STEP_S
    return _COUNTER_LOST_S + extra, _COUNTER_RESTART_S + extra


class StoppedBeforeStart(Exception):
    """The program stopped while this node was still starting: nothing to run."""


def poll(attempt, timeout_s: float, failure: str, interval_s: float = 0.2, go_on=lambda: True):
    """`attempt()`'s first result that is not None, tried until `timeout_s` has passed (at
    least once) or `go_on()` is false; then TimeoutError(failure). An exception from
    `attempt` counts as no result (the other side is not up yet)."""
    deadline = time.time() + timeout_s
    while True:
        try:
            result = attempt()
            if result is not None:
                return result
        except StoppedBeforeStart:
            raise
        except Exception:  # not up yet
            pass
        if time.time() >= deadline or not go_on():
            raise TimeoutError(failure)
        time.sleep(interval_s)


def announce_counter(launch_dir: str, address: str) -> None:
    """Writes where the launch's counter serves (RUN_DIR/launches/<k>/coordinator), whole: its
    nodes, the launcher, and `experiments.sweep` (is the run going? stop it) read it."""
    path = os.path.join(launch_dir, COORDINATOR_FILE)
    os.makedirs(launch_dir, exist_ok=True)
    with open(path + ".tmp", "w") as file:
        file.write(address + "\n")
    os.replace(path + ".tmp", path)


def wait_for_coordinator(launch_dir: str, timeout_s: float, alive=lambda: True) -> str:
    """The counter's address once it has written it (launchers and job scripts wait on this)."""
    path = os.path.join(launch_dir, COORDINATOR_FILE)

    def read():
        with open(path) as file:
            return file.read().strip() or None

    return poll(read, timeout_s, f"The counter node did not start within {timeout_s:.0f} s (no {path}); see its log.",
                interval_s=0.1, go_on=alive)


class StaticAddressBuilder:
    """An address known when the process starts (its own, or the counter's)."""

    def __init__(self, address: str):
        self._address = address

    def build(self) -> str:
        return self._address


class RegistryAddressBuilder:
    """The address another node registered with the counter; waits until it has."""

    def __init__(self, coordinator, node: str):
        self._coordinator = coordinator
        self._node = node

    def build(self) -> str:
        def lookup():
            address = self._coordinator.lookup_address(self._node)
            if not address and self._coordinator.stop_reason():
                raise StoppedBeforeStart(f"the program stopped before node {self._node} registered")
            return address or None

        return poll(lookup, _FIND_TIMEOUT_S,
                    f"node {self._node} did not register with the counter within {_FIND_TIMEOUT_S:.0f} s; see its log")


def _own_host() -> str:
    if _HOST.value:
        return _HOST.value
    name = os.environ.get("SLURMD_NODENAME")
    if name is None:
        raise ValueError("launch.runtime.entry needs --host (this host's address), or to run in a SLURM step.")
    from launch.runtime import cluster

    return cluster.slurm_node_address(name)


def _node_name() -> tuple:
    if "/" in _NODE.value:
        label, index = _NODE.value.split("/")
        return label, int(index)
    if not _INDEX_ENV.value or _INDEX_ENV.value not in os.environ:
        raise ValueError(f"--node={_NODE.value} has no index: give group/index, or --index_env set in the environment.")
    return _NODE.value, int(os.environ[_INDEX_ENV.value])


def _watch_stop(coordinator, node: str, attempt: int, stopped: threading.Event, lost_s: float) -> None:
    """Stops this process the way a local stop does once the counter says the program stops,
    or once the counter has been unreachable for `lost_s`. Ends it at once if the counter says
    a newer process of the node runs: a final checkpoint or report of this stale copy would
    compete with that process's."""
    last_answer = time.time()
    while not stopped.wait(0.2):
        try:
            reason = coordinator.stop_reason(node, attempt)
            last_answer = time.time()
        except Exception:  # busy or gone
            reason = None if time.time() - last_answer < lost_s else "the counter is unreachable"
        if reason and reason.startswith(faults.SUPERSEDED):
            print(f"relay node {node}: {reason}; this process ends now, without a final save or report", flush=True)
            sys.stderr.flush()
            os._exit(faults.SUPERSEDED_EXIT_CODE)
        if reason:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def run_node(launch_dir: str, label: str, index: int, host: str, coordinator_address: str = None,
             port: int = None) -> int:
    import courier

    from launch.runtime import launch_files  # here: the supervisor, which only starts this, stays light

    addresses, node = launch_files.read_node(launch_dir, label, index)
    if len(node.addresses) > 1:
        raise ValueError(f"Node {label}/{index} serves {len(node.addresses)} addresses; Relay's nodes serve one.")
    own_address = f"{host}:{port or ports.reserve_port()}"
    if label == "counter":
        coordinator_address = own_address
    elif not coordinator_address:
        raise ValueError("--coordinator is required for every node but the counter.")
    coordinator = courier.Client(coordinator_address, call_timeout=2.0)  # courier clients are thread-safe
    for group_label, group in addresses.items():
        for node_index, node_addresses in enumerate(group):
            for address in node_addresses:
                if (group_label, node_index) == (label, index):
                    launchpad_internals.bind_address(address, StaticAddressBuilder(own_address))
                elif (group_label, node_index) == ("counter", 0):
                    launchpad_internals.bind_address(address, StaticAddressBuilder(coordinator_address))
                else:
                    launchpad_internals.bind_address(
                        address, RegistryAddressBuilder(coordinator, f"{group_label}/{node_index}"))

    launchpad_internals.start_stop_machinery()
    launchpad_internals.initialize_node(node, lambda: rpc.final_client(
        coordinator_address, call_timeout_s=2.0).request_stop(f"lp.stop() by {label}/{index}"))
    if label == "counter":
        announce_counter(launch_dir, own_address)
    elif node.addresses:
        attempt = node_attempt()
        poll(lambda: coordinator.register_address(f"{label}/{index}", own_address, attempt) or True, _FIND_TIMEOUT_S,
             f"The counter did not answer within {_FIND_TIMEOUT_S:.0f} s; see its log.")
    accelerators = "CPU only" if os.environ.get("JAX_PLATFORMS") == "cpu" else "accelerators allowed"
    print(f"relay node {label}/{index} on {host} (pid {os.getpid()}, {accelerators})"
          + (f", serving at {own_address}" if node.addresses else "") + f"; counter at {coordinator_address}", flush=True)
    stopped = threading.Event()
    watcher = f"{label}/{index}"  # a restarted process takes its place
    threading.Thread(target=_watch_stop, args=(coordinator, watcher, node_attempt(), stopped,
                                               counter_patience_s(launch_dir)[0]),
                     daemon=True, name="stop-watch").start()
    try:
        launchpad_internals.run_node(node)
    except StoppedBeforeStart as stopped_early:
        print(f"relay node {label}/{index}: {stopped_early}", flush=True)
    except faults.RunError as error:  # no restart mends it: the whole run stops, saying why
        return _stop_run(coordinator_address, f"node {label}/{index}: {error}")
    except BaseException as error:  # the supervisor starts the node again, unless the disk is full
        traceback.print_exc()
        run_dir = run_dir_of_launch(launch_dir)
        full = disk_full.run_error(error, f"Node {label}/{index} could not write", run_dir,
                                   "What was written before is whole.", run_dir)
        return 1 if full is None else _stop_run(coordinator_address, f"node {label}/{index}: {full}")
    finally:
        stopped.set()
    return 0


def _stop_run(coordinator_address: str, reason: str) -> int:
    """A RunError: the counter stops the whole run with `reason`; nothing is restarted."""
    print(f"relay {reason}", flush=True)
    rpc.ask_to_stop(coordinator_address, reason)  # the counter may be gone too
    return faults.RUN_ERROR_EXIT_CODE


def _log_path() -> str:
    """Where this process's output goes, when it is a file (the launchers' logs)."""
    try:
        path = os.readlink("/proc/self/fd/1")
    except OSError:
        return None
    return path if path.startswith("/") and os.path.isfile(path) else None


def _registered_port(coordinator_address: str, node: str, host: str, patience_s: float):
    """The port `node` served at on `host`, as it registered with the counter; None if it served
    elsewhere or the counter does not answer. A relaunched node serves there again: the other
    nodes' clients still hold that address."""
    counter = rpc.final_client(coordinator_address, call_timeout_s=2.0)
    try:
        address = poll(lambda: counter.lookup_address(node) or "", patience_s, "")
    except TimeoutError:
        return None
    served_host, _, served_port = address.rpartition(":")
    return int(served_port) if served_host == host and served_port.isdigit() else None


def supervise(launch_dir: str, label: str, index: int, host: str, coordinator_address: str = None,
              port: int = None, relaunched: bool = False) -> int:
    """Runs the node in a child process, started again when it dies (`launch.runtime.supervisor`).
    `relaunched`: this supervisor replaces one that was lost; its first child is a restart."""

    node = f"{label}/{index}"
    if relaunched and port is None and label != "counter":
        port = _registered_port(coordinator_address, node, host, counter_patience_s(launch_dir)[1])
    port = port or ports.reserve_port()  # held for this process's life: every restart serves at it
    if label == "counter":
        coordinator_address = f"{host}:{port}"
    settings = read_json(os.path.join(launch_dir, SUPERVISION_FILE)) or {}
    argv = [sys.executable, "-m", "launch.runtime.entry", f"--launch_dir={launch_dir}", f"--node={label}/{index}",
            f"--host={host}", f"--port={port}"]
    if coordinator_address and label != "counter":
        argv.append(f"--coordinator={coordinator_address}")
    counter = rpc.final_client(coordinator_address, call_timeout_s=2.0)
    patience_s = counter_patience_s(launch_dir)[1]

    def stopping() -> bool:
        if label == "counter":  # its own saved state says whether the program was stopping
            from launch.nodes.counter import saved_stop_reason

            return saved_stop_reason(launch_dir) is not None
        try:  # the counter may be restarting too: it has a while to come back
            return poll(lambda: counter.stop_reason() or "", patience_s, "") != ""
        except TimeoutError:
            return True  # no counter: the program is gone

    def report(record: dict) -> None:
        try:
            poll(lambda: counter.record_restart(record) or True, patience_s, "")
        except TimeoutError:  # the counter is gone: this process's output has the record
            print("relay supervisor: the counter did not take the record", flush=True)
            return
        if not record["restarted"]:
            try:
                counter.request_stop(record["message"])
            except Exception as error:
                print(f"relay supervisor: the counter did not take the stop ({type(error).__name__})", flush=True)

    def next_attempt(attempt: int) -> int:
        """Past every process of the node the counter knows of: where this host was cut off and
        the node started elsewhere meanwhile, that one's attempt is taken, and the copy started
        here is the newer (the counter then ends the other: one copy runs, not two)."""
        if label == "counter":
            return attempt
        try:
            return max(attempt, counter.next_attempt(node))
        except Exception:  # busy: it answered `stopping()` a moment ago
            return attempt

    first_attempt = 0
    if relaunched and label == "counter":
        first_attempt = 1  # it goes on from its saved state, as a restarted counter does
    elif relaunched:
        first_attempt = poll(lambda: counter.next_attempt(node), patience_s,
                             f"The counter did not answer within {patience_s:.0f} s; the program is gone.")
    code = supervisor.Supervisor(argv, node, supervisor.RestartPolicy.from_json(settings), stopping, report,
                                 log=_log_path(), first_attempt=first_attempt, next_attempt=next_attempt).run()
    return supervisor.exit_code(code)


def main(argv) -> None:
    del argv
    label, index = _node_name()
    if _ATTEMPT.value is None:
        code = supervise(_LAUNCH_DIR.value, label, index, _own_host(), _COORDINATOR.value, _PORT.value,
                         _RELAUNCHED.value)
    else:
        # `kill -USR2 PID` prints every thread's stack to the node's log: what a hung node is doing.
        faulthandler.register(signal.SIGUSR2, all_threads=True)
        os.environ[ATTEMPT_ENV] = str(_ATTEMPT.value)
        code = run_node(_LAUNCH_DIR.value, label, index, _own_host(), _COORDINATOR.value, _PORT.value)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: everything the node writes is closed, and native threads
    # (TensorFlow, Reverb, gRPC, orbax) were once seen to hold a learner's exit for over 9 s.
    os._exit(code)


def _prepare_process() -> None:
    """Before anything imports JAX: only the learner may open an accelerator (its supervisor
    never imports JAX)."""
    node = next((arg.split("=", 1)[1] for arg in sys.argv if arg.startswith("--node=")), "")
    if node.split("/")[0] != "learner":
        os.environ.update(CPU_ONLY_ENV)


if __name__ == "__main__":
    if any(arg.startswith("--attempt=") for arg in sys.argv):  # a node's own process
        supervisor.die_with_supervisor()
    _prepare_process()
    flags.mark_flags_as_required(["launch_dir", "node"])
    app.run(main)
