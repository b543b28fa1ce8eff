"""The cluster spec: which node groups run on which hosts, and what each set of hosts needs.

A spec is a JSON file (`--cluster=PATH`):

    {"components": [
        {"groups": ["replay", "counter", "monitor", "evaluator", "loader"], "hosts": ["node1"], "cpus": 4, "mem": "16G"},
        {"groups": ["learner"], "hosts": ["gpu1"], "gpus": 1, "cpus": 8},
        {"groups": ["actor"], "hosts": ["cpu1", "cpu2"], "cpus": 32}],
     "command_template": "ssh {host} cd /path/to/relay &&",
     "slurm": {"partition": "gpu", "account": "mylab", "time": "12:00:00", "max_jobs": 10}}

A component is a set of hosts and the groups that share them; under SLURM it is one
component of a heterogeneous job, and gives `nodes` (a count) instead of `hosts`. A
group's nodes go round the component's hosts in turn. A group named by no component
runs with the counter. A host is a name, or {"name": ..., "address": ...} when the
address other hosts reach it at is not its name.
"""

import dataclasses
import json
import subprocess
from typing import Dict, List, Optional, Tuple

from launch.config import dataclass_from_json


@dataclasses.dataclass(frozen=True)
class Host:
    name: str
    address: str  # what other hosts connect to (an IP or a resolvable name)


@dataclasses.dataclass(frozen=True)
class Component:
    groups: Tuple[str, ...]
    hosts: Tuple[Host, ...] = ()  # the no-scheduler launch; SLURM fills them in when the job starts
    nodes: int = 1  # SLURM: hosts to allocate
    cpus: Optional[int] = None  # per host
    gpus: int = 0  # per host
    mem: Optional[str] = None  # per host, SLURM syntax ("16G")
    partition: Optional[str] = None  # SLURM: this component's, over the spec's "slurm" partition

    def __post_init__(self):
        if not self.groups:
            raise ValueError("A cluster component lists no groups: give each component at least one node group.")
        if self.nodes < 1 or self.gpus < 0 or (self.cpus is not None and self.cpus < 1):
            raise ValueError(f"Component {list(self.groups)}: nodes must be >= 1, cpus >= 1 and gpus >= 0.")


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    partition: Optional[str] = None
    account: Optional[str] = None
    time: Optional[str] = None  # sbatch --time
    # Extra `#SBATCH` options for every component (e.g. "--qos=high").
    extra: Tuple[str, ...] = ()
    # False where a site forbids heterogeneous jobs: one job per component, each started
    # once the counter's has (sbatch --dependency=after).
    heterogeneous: bool = True
    # A heterogeneous job's run goes on in up to this many jobs (the first included): the next
    # one is submitted when a job nears its time limit or loses a host it cannot run on again,
    # and a requeued or preempted job resumes the run where it starts again.
    max_jobs: int = 10
    # The nodes are asked to stop this long before the job's time limit: the final checkpoint,
    # the recordings' last blocks and the summary have to be written by then.
    stop_before_limit_s: float = 300.0
    # A step none of whose nodes the counter has heard from for this long is lost, though its
    # srun may still wait (a host gone, or its slurmstepd killed): it is ended and started again.
    lost_after_s: float = 60.0

    def __post_init__(self):
        if self.max_jobs < 1 or self.stop_before_limit_s < 0 or self.lost_after_s <= 0:
            raise ValueError(f"The cluster spec's slurm options need max_jobs >= 1, stop_before_limit_s >= 0 and "
                             f"lost_after_s > 0, got {self.max_jobs}, {self.stop_before_limit_s} and "
                             f"{self.lost_after_s}.")


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    components: Tuple[Component, ...]
    # The no-scheduler launch: what runs a command on a host, e.g. "ssh {host} cd /path/to/relay &&"
    # ({host}: the host's name, {address}: its address). Empty: run on this machine.
    command_template: str = ""
    slurm: SlurmOptions = SlurmOptions()

    def __post_init__(self):
        seen: Dict[str, int] = {}
        for index, component in enumerate(self.components):
            for group in component.groups:
                if group in seen:
                    raise ValueError(f"Group {group!r} is in cluster components {seen[group]} and {index}; "
                                     "place each group in one component.")
                seen[group] = index
        if not self.components:
            raise ValueError("The cluster spec has no components.")

    def component_of(self, group: str) -> int:
        """The index of the component that runs `group` (the counter's for a group no component names)."""
        for index, component in enumerate(self.components):
            if group in component.groups:
                return index
        for index, component in enumerate(self.components):
            if "counter" in component.groups:
                return index
        return 0

    def host_of(self, group: str, index: int) -> Host:
        """Where node `index` of `group` runs: round the component's hosts in turn."""
        hosts = self.components[self.component_of(group)].hosts
        if not hosts:
            raise ValueError(f"The component of group {group!r} names no hosts.")
        return hosts[index % len(hosts)]

    def with_hosts(self, hosts_per_component: List[List[Host]]) -> "ClusterSpec":
        """The spec with each component's hosts filled in (SLURM, when the job starts)."""
        return dataclasses.replace(self, components=tuple(
            dataclasses.replace(component, hosts=tuple(hosts), nodes=len(hosts))
            for component, hosts in zip(self.components, hosts_per_component)))

    def with_component_hosts(self, index: int, hosts: List[Host]) -> "ClusterSpec":
        """The spec with component `index`'s hosts filled in (one SLURM job per component)."""
        components = list(self.components)
        components[index] = dataclasses.replace(components[index], hosts=tuple(hosts), nodes=len(hosts))
        return dataclasses.replace(self, components=tuple(components))

    def check_program(self, groups, need_hosts: bool) -> None:
        """Refuses a spec that cannot run a program of `groups`: unknown groups, or hosts missing."""
        unknown = sorted({group for component in self.components for group in component.groups} - set(groups)
                         - _OPTIONAL_GROUPS)
        if unknown:
            raise ValueError(f"The cluster spec places groups the program does not have: {', '.join(unknown)}. "
                             f"The program's groups: {', '.join(sorted(set(groups) | _OPTIONAL_GROUPS))}.")
        if need_hosts:
            for component in self.components:
                if not component.hosts:
                    raise ValueError(f"Cluster component {list(component.groups)} lists no hosts: "
                                     "give \"hosts\": [...] for a launch without a scheduler.")


# The training program's groups (launch.program); the loader runs only with RaE or a resume.
PROGRAM_GROUPS = ("replay", "counter", "learner", "actor", "monitor", "evaluator")
_OPTIONAL_GROUPS = frozenset({"loader"})


def _host(value) -> dict:
    if isinstance(value, str):
        return {"name": value, "address": value}
    if isinstance(value, dict) and "name" in value:
        return {"name": value["name"], "address": value.get("address", value["name"])}
    raise ValueError(f"A host is a name or {{\"name\": ..., \"address\": ...}}, got {value!r}.")


def from_json(data: dict) -> ClusterSpec:
    data = dict(data)
    data["components"] = [dict(component, hosts=[_host(host) for host in component.get("hosts", [])])
                          for component in data.get("components", [])]
    try:
        return dataclass_from_json(ClusterSpec, data)
    except TypeError as error:
        raise ValueError(f"The cluster spec does not parse: {error}.") from error


def load(path: str) -> ClusterSpec:
    try:
        with open(path) as file:
            data = json.load(file)
    except FileNotFoundError:
        raise ValueError(f"--cluster={path}: no such file.") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"--cluster={path} is not valid JSON: {error}.") from None
    return from_json(data)


def to_json(spec: ClusterSpec) -> dict:
    return dataclasses.asdict(spec)


def slurm_node_address(name: str) -> str:
    """The address SLURM reaches node `name` at (its NodeAddr; its name if none is set)."""
    result = subprocess.run(["scontrol", "show", "node", "-o", name], capture_output=True, text=True)
    for field in result.stdout.split():
        if field.startswith("NodeAddr="):
            return field.split("=", 1)[1]
    return name
