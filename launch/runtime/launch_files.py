"""What a launch hands its node processes: RUN_DIR/launches/<k>/ with the pickled program,
the cluster spec and each node's restart budget, and the command line that starts a node
(`launch.runtime.entry`), on this host or another."""

import json
import os
import pickle
import sys
from typing import Optional

from launch.rundir.jsonio import write_json
from launch.rundir.paths import CLUSTER_FILE, PROGRAM_FILE, SUPERVISION_FILE, RunPaths
from launch.runtime import cluster
from launch.runtime.supervisor import RestartPolicy

# The repository root: node processes start here, on every host (a shared filesystem).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def entry_argv(launch_dir: str, node: str, host: Optional[str] = None, coordinator: Optional[str] = None,
               index_env: Optional[str] = None, python: str = sys.executable, port: Optional[int] = None,
               relaunched: bool = False) -> list:
    """The command line of `launch.runtime.entry` for one node (or one group, with `index_env`);
    `relaunched`: it replaces the node's lost supervisor."""
    argv = [python, "-m", "launch.runtime.entry", f"--launch_dir={launch_dir}", f"--node={node}"]
    for name, value in (("host", host), ("coordinator", coordinator), ("index_env", index_env), ("port", port)):
        if value:
            argv.append(f"--{name}={value}")
    return argv + ["--relaunched"] * relaunched


def write_program(program, launch_dir: str, restarts: RestartPolicy = RestartPolicy()) -> None:
    """Pickles the program for `launch.runtime.entry` to load, each node on its own: a process
    unpickles only its node, so it imports only what that node needs (the counter and the
    evaluator never import Reverb or TensorFlow). Each node's supervisor restarts it as
    `restarts` allows."""
    import cloudpickle

    os.makedirs(launch_dir, exist_ok=True)
    write_json(os.path.join(launch_dir, SUPERVISION_FILE), restarts.to_json())
    addresses = {label: [list(node.addresses) for node in nodes] for label, nodes in program.groups.items()}
    # One pickle holds a node with every node's addresses, so that the addresses in its handles
    # are the very objects the entry binds.
    nodes = {label: [cloudpickle.dumps((addresses, node)) for node in nodes] for label, nodes in program.groups.items()}
    with open(os.path.join(launch_dir, PROGRAM_FILE + ".tmp"), "wb") as file:
        pickle.dump(nodes, file)
    os.replace(os.path.join(launch_dir, PROGRAM_FILE + ".tmp"), os.path.join(launch_dir, PROGRAM_FILE))


def read_node(launch_dir: str, label: str, index: int):
    """`(addresses, node)`: node `label/index` of the program in `launch_dir`, and every node's
    addresses by group ({label: [[Address, ...] per node]})."""
    import cloudpickle

    with open(os.path.join(launch_dir, PROGRAM_FILE), "rb") as file:
        nodes = pickle.load(file)
    if label not in nodes or not 0 <= index < len(nodes[label]):
        raise ValueError(f"The program has no node {label}/{index}; its groups: "
                         + ", ".join(f"{name} ({len(group)})" for name, group in nodes.items()))
    return cloudpickle.loads(nodes[label][index])


def write_launch(program, spec: cluster.ClusterSpec, run_dir: str, launch_index: int,
                 restarts: RestartPolicy = RestartPolicy()) -> str:
    """The launch directory with the pickled program, the cluster spec and each node's restart
    budget; returns its path."""
    launch_dir = RunPaths(run_dir).launch_dir(launch_index)
    if os.path.exists(os.path.join(launch_dir, PROGRAM_FILE)):
        raise ValueError(f"{launch_dir} already holds a launch of this run; launches are never overwritten.")
    write_program(program, launch_dir, restarts)
    with open(os.path.join(launch_dir, CLUSTER_FILE), "w") as file:
        json.dump(cluster.to_json(spec), file, indent=2)
    return launch_dir
