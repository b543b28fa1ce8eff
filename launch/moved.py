"""Modules that moved when launch/ took its folders: importing an old name fails with an
ImportError that names the new module, instead of a bare "No module named".

A finder at the end of `sys.meta_path`, asked only after every real module was looked
for, so it never hides one."""

import importlib.abc
import sys
from typing import Mapping

# old module -> where its contents are now
MOVED = {
    "launch.actor": "launch.loops.actor (Actor)",
    "launch.checkpoints": "launch.rundir.checkpoints",
    "launch.metrics": "launch.rundir.metrics",
    "launch.summary": "launch.rundir.summary (read_json, write_json: launch.rundir.jsonio; COUNTS_FILE: "
                      "launch.rundir.paths.RunPaths(run_dir).counts)",
    "launch.nonfinite": "launch.faults.nonfinite",
    "launch.disk_full": "launch.faults.disk_full",
    "launch.rpc": "launch.nodes.rpc",
    "launch.counter": "launch.nodes.counter",
    "launch.learner_node": "launch.nodes.learner (the loop: launch.loops.learner.LearnerLoop)",
    "launch.replay_node": "launch.nodes.replay_server",
    "launch.loading": "launch.nodes.loader",
    "launch.launching": "launch.runtime.threads (local_mt), launch.nodes.process (node_attempt), "
                        "launch.rundir.paths.RunPaths (logs_dir, launch_dir)",
    "launch.entry": "launch.runtime.entry",
    "launch.supervisor": "launch.runtime.supervisor",
    "launch.hosts": "launch.runtime.hosts (write_launch, entry_argv: launch.runtime.launch_files)",
    "launch.slurm": "launch.runtime.slurm",
    "launch.cluster": "launch.runtime.cluster",
    "launch.ports": "launch.runtime.ports",
    "experiments.progress": "launch.runtime.progress",
    "experiments.plotting": "launch.rundir.plots",
    "experiments.netns_hosts": "experiments.testbed.netns_hosts",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    def __init__(self, moved: Mapping[str, str]):
        self._moved = dict(moved)

    def find_spec(self, fullname, path, target=None):
        if fullname in self._moved:
            raise ImportError(f"{fullname} has moved: import {self._moved[fullname]} (see README.md, \"Layout\").",
                              name=fullname)
        return None


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder(MOVED))
