"""The layout's rules, read from the code's import statements (every one, at any depth).

- Packages import one way: agents and environments know nothing of the others; replay
  uses those two; launch uses the three; experiments uses launch.
- Inside launch: runtime -> program -> nodes -> loops -> rundir, faults and config, never
  back up; the `launch` package itself is the facade at the top (`from launch import launch`).
- No import cycles between modules.
- Nothing below the nodes imports Launchpad; agents/ imports no TensorFlow, Reverb or Launchpad.
- experiments/testbed (namespace hosts, the SLURM cluster builder) is for tests and
  benchmarks: no product module imports it.
- No Python file outside tests/ is over 400 lines.
"""

import ast
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("agents", "environments", "replay", "launch", "experiments")
PACKAGE_RANK = {"agents": 0, "environments": 0, "replay": 1, "launch": 2, "experiments": 3}
# Inside launch: a module may import launch modules of its own rank or lower.
LAUNCH_RANK = {"launch.config": 0, "launch.moved": 0, "launch.rundir": 0, "launch.faults": 0, "launch.loops": 1,
               "launch.nodes": 2, "launch.program": 3, "launch.runtime": 4, "launch": 5}
MAX_LINES = 400


def module_files():
    """Dotted module name -> path, for every module of the packages."""
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = module_files()


def imports_of(module: str):
    """The modules `module` imports (any depth), resolved to the project's modules where they are one."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return found


def project(name: str):
    """The project module an imported name lands in (its longest known prefix), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


GRAPH = {module: {project(name) for name in imports_of(module)} - {None, module} for module in MODULES}
EXTERNAL = {module: {name.split(".")[0] for name in imports_of(module) if project(name) is None} for module in MODULES}


def launch_rank(module: str) -> int:
    """The rank of the longest LAUNCH_RANK prefix of `module`."""
    prefix = max((prefix for prefix in LAUNCH_RANK if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAUNCH_RANK[prefix]


def test_packages_import_one_way():
    wrong = [f"{module} imports {other}" for module, others in GRAPH.items() for other in others
             if PACKAGE_RANK[other.split(".")[0]] > PACKAGE_RANK[module.split(".")[0]]
             or (module.split(".")[0] == "agents" and other.split(".")[0] == "environments")
             or (module.split(".")[0] == "environments" and other.split(".")[0] == "agents")]
    assert wrong == []


def test_inside_launch_imports_go_down_from_runtime_to_program_nodes_loops_and_the_run_directory():
    wrong = [f"{module} (rank {launch_rank(module)}) imports {other} (rank {launch_rank(other)})"
             for module, others in GRAPH.items() if module.startswith("launch")
             for other in others if other.startswith("launch") and launch_rank(other) > launch_rank(module)]
    assert wrong == []


def test_no_module_imports_itself_through_others():
    cycles, state = [], {}

    def visit(module, stack):
        state[module] = "open"
        for other in sorted(GRAPH[module]):
            if state.get(other) == "open":
                cycles.append(" -> ".join(stack[stack.index(other):] + [other]))
            elif other not in state:
                visit(other, stack + [other])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    # A package's __init__ that re-exports its modules is imported by them as their parent, not a cycle.
    cycles = [cycle for cycle in cycles if not _through_own_init(cycle)]
    assert cycles == []


def _through_own_init(cycle: str) -> bool:
    modules = cycle.split(" -> ")
    return any(other.startswith(module + ".") for module in modules for other in modules)


def test_loops_and_the_run_directory_know_nothing_of_launchpad_and_agents_nothing_of_tf_reverb_launchpad():
    below_nodes = [module for module in MODULES if module.startswith("launch") and launch_rank(module) < 2]
    assert [m for m in below_nodes if {"launchpad", "courier"} & EXTERNAL[m]] == []
    assert [m for m in MODULES if m.startswith("agents") and {"tensorflow", "reverb", "launchpad"} & EXTERNAL[m]] == []


def test_test_support_is_never_imported_by_product_code():
    product = [module for module in MODULES if not module.startswith(("experiments.testbed", "experiments.bench"))]
    assert [f"{module} imports {other}" for module in product for other in GRAPH[module]
            if other.startswith("experiments.testbed")] == []


def test_no_python_file_outside_tests_is_over_400_lines():
    long = {str(path.relative_to(ROOT)): lines for path in MODULES.values()
            if (lines := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.parametrize("old, new", [("launch.actor", "launch.loops.actor"), ("launch.checkpoints", "launch.rundir.checkpoints"),
                                      ("launch.entry", "launch.runtime.entry"), ("experiments.netns_hosts", "experiments.testbed.netns_hosts")])
def test_a_moved_module_names_its_new_place(old, new):
    import importlib

    with pytest.raises(ImportError, match=f"{old} has moved: import {new}"):
        importlib.import_module(old)
    importlib.import_module(new)  # and the new one is there


def test_the_graph_sees_the_imports_it_checks():
    """The rules above are only as good as the graph: it holds known edges of each kind."""
    assert "launch.loops.actor" in GRAPH["launch.nodes.actor"]  # from launch.loops.actor import Actor
    assert "launch.rundir.checkpoints" in GRAPH["launch.loops.learner"]  # from launch.rundir import checkpoints
    assert "replay" in GRAPH["launch.loops.actor"]  # import replay
    assert "launchpad" in EXTERNAL["launch.nodes.actor"] and os.path.exists(MODULES["launch.runtime.launcher"])
    assert [launch_rank(m) for m in ("launch.rundir.paths", "launch.loops.actor", "launch.nodes.rpc", "launch.program",
                                     "launch.runtime.entry", "launch")] == [0, 1, 2, 3, 4, 5]
