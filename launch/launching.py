"""Launching a program on this machine, as threads (local_mt) or processes (local_mp); the
multi-node launch types (launch.hosts, launch.slurm) start each node with launch.entry."""

import os

import launchpad as lp
from launchpad.launch.run_locally import launch_local_output_to_files
from launchpad.nodes.python import local_multi_processing

LOCAL_LAUNCH_TYPES = ("local_mt", "local_mp")
LAUNCH_TYPES = LOCAL_LAUNCH_TYPES + ("hosts", "slurm")

# Actors, the evaluator and the monitor never touch an accelerator: N actors must not open N
# GPU contexts. TensorFlow (CPU build) never sees a GPU either way.
CPU_ONLY_ENV = {"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
_CPU_GROUPS = ("actor", "evaluator", "monitor", "counter", "replay", "loader")
# Set in every node process of local_mp: a node that owns its process may end it itself.
OWN_PROCESS_ENV = "RELAY_NODE_OWNS_PROCESS"


def logs_dir(run_dir: str, launch_index: int = 0) -> str:
    """Where the nodes' output goes: RUN_DIR/logs, and RUN_DIR/logs/launch_<k> for the k-th
    resume (Launchpad truncates its log files, and an earlier launch's logs are kept)."""
    base = os.path.join(os.path.abspath(run_dir), "logs")
    return base if launch_index == 0 else os.path.join(base, f"launch_{launch_index}")


def launch_dir(run_dir: str, launch_index: int = 0) -> str:
    """What a multi-node launch hands its nodes (the pickled program, the cluster spec, the
    counter's address) and its job script: RUN_DIR/launches/<k>."""
    return os.path.join(os.path.abspath(run_dir), "launches", str(launch_index))


def counter_address(program: lp.Program) -> str:
    """The counter node's host:port once the program is launched on this machine."""
    return program.groups["counter"][0].courier_address.resolve()


def launch(program: lp.Program, launch_type: str, run_dir: str, launch_index: int = 0):
    """Starts `program` on this machine and returns Launchpad's worker manager (call .wait() on it)."""
    if launch_type not in LOCAL_LAUNCH_TYPES:
        raise ValueError(f"Unknown local launch type {launch_type!r}; choose one of {', '.join(LOCAL_LAUNCH_TYPES)}.")
    # Node outputs (local_mp) go into the run directory, not /tmp/launchpad_out. Launchpad
    # reads LAUNCHPAD_LOGGING_DIR once at import, so its module setting is the one to change.
    launch_local_output_to_files._LOGGING_DIR = logs_dir(run_dir, launch_index)  # pylint: disable=protected-access
    if launch_type == "local_mt":
        return lp.launch(program, launch_type="local_mt", serialize_py_nodes=False)
    resources = {group: local_multi_processing.PythonProcess(
                     env={OWN_PROCESS_ENV: "1", **(CPU_ONLY_ENV if group in _CPU_GROUPS else {})})
                 for group in program.groups}
    return lp.launch(program, launch_type="local_mp", terminal="output_to_files", local_resources=resources)
