"""What a launch hands its node processes: RUN_DIR/launches/<k>/ with the pickled program,
the cluster spec and each node's restart budget, and the command line that starts a node
(`launch.runtime.entry`), on this host or another."""

import json
import os
import sys
from typing import Optional

from launch.rundir.jsonio import write_json
from launch.rundir.paths import CLUSTER_FILE, PROGRAM_FILE, SUPERVISION_FILE, RunPaths
from launch.runtime import cluster

# The repository root: node processes start here, on every host (a shared filesystem).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def entry_argv(launch_dir: str, node: str, host: Optional[str] = None, coordinator: Optional[str] = None,
               index_env: Optional[str] = None, python: str = sys.executable, port: Optional[int] = None) -> list:
    """The command line of `launch.runtime.entry` for one node (or one group, with `index_env`)."""
    argv = [python, "-m", "launch.runtime.entry", f"--launch_dir={launch_dir}", f"--node={node}"]
    for name, value in (("host", host), ("coordinator", coordinator), ("index_env", index_env), ("port", port)):
        if value:
            argv.append(f"--{name}={value}")
    return argv


def write_program(program, launch_dir: str, max_restarts: int = 0) -> None:
    """Pickles the program's nodes, group by group, for `launch.runtime.entry` to load; each
    node's supervisor restarts it at most `max_restarts` times."""
    import cloudpickle

    os.makedirs(launch_dir, exist_ok=True)
    write_json(os.path.join(launch_dir, SUPERVISION_FILE), {"max_restarts_per_node": max_restarts})
    groups = {label: list(nodes) for label, nodes in program.groups.items()}
    with open(os.path.join(launch_dir, PROGRAM_FILE + ".tmp"), "wb") as file:
        cloudpickle.dump(groups, file)
    os.replace(os.path.join(launch_dir, PROGRAM_FILE + ".tmp"), os.path.join(launch_dir, PROGRAM_FILE))


def write_launch(program, spec: cluster.ClusterSpec, run_dir: str, launch_index: int, max_restarts: int = 0) -> str:
    """The launch directory with the pickled program, the cluster spec and each node's restart
    budget; returns its path."""
    launch_dir = RunPaths(run_dir).launch_dir(launch_index)
    if os.path.exists(os.path.join(launch_dir, PROGRAM_FILE)):
        raise ValueError(f"{launch_dir} already holds a launch of this run; launches are never overwritten.")
    write_program(program, launch_dir, max_restarts)
    with open(os.path.join(launch_dir, CLUSTER_FILE), "w") as file:
        json.dump(cluster.to_json(spec), file, indent=2)
    return launch_dir
