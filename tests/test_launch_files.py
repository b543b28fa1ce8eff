"""A launch's pickled program (launch.runtime.launch_files): each node process loads its own node,
with the addresses its handles call bound to the nodes they name, and imports only what that
node needs."""

import json
import subprocess
import sys

import environments
from experiments import configs
from launch.program import make_program
from launch.runtime import launch_files
from test_program import ROOT

# In a fresh process, as a node process loads its node. For each node: what it imported of
# Reverb and TensorFlow, which nodes its own and its handles' addresses belong to.
_LOAD_NODES = r"""
import json, sys
from launch.runtime import launch_files

loaded = {}
for label, index in [("counter", 0), ("evaluator", 0), ("actor", 1)]:
    addresses, node = launch_files.read_node(sys.argv[1], label, index)
    owner = {id(address): f"{group}/{i}" for group, nodes in addresses.items()
             for i, node_addresses in enumerate(nodes) for address in node_addresses}
    loaded[f"{label}/{index}"] = {
        "heavy_imports": sorted(name for name in ("reverb", "tensorflow") if name in sys.modules),
        "serves": [owner.get(id(address), "not in the layout") for address in node.addresses],
        "calls": sorted(owner.get(id(handle._address), "not in the layout") for handle in node.input_handles),
    }
try:
    launch_files.read_node(sys.argv[1], "actor", 2)
except ValueError as error:
    loaded["refusal"] = str(error)
print(json.dumps(loaded))
"""


def test_each_node_loads_alone_and_its_handles_call_the_nodes_they_name(tmp_path):
    config = configs.make_experiment_config(agent="mpo", task="cartpole:swingup", run_dir=str(tmp_path / "run"),
                                            preset="debug", num_actors=2)
    program = make_program(config, environments.environment_spec(config.environment))
    launch_files.write_program(program, str(tmp_path / "launch"))
    result = subprocess.run([sys.executable, "-c", _LOAD_NODES, str(tmp_path / "launch")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    # The counter and the evaluator start without Reverb and TensorFlow (seconds of CPU per process).
    assert loaded["counter/0"] == {"heavy_imports": [], "serves": ["counter/0"], "calls": []}
    assert loaded["evaluator/0"] == {"heavy_imports": [], "serves": ["evaluator/0"],
                                     "calls": ["counter/0", "learner/0"]}
    assert loaded["actor/1"] == {"heavy_imports": ["reverb", "tensorflow"], "serves": ["actor/1"],
                                 "calls": ["counter/0", "learner/0", "replay/0"]}
    assert loaded["refusal"] == ("The program has no node actor/2; its groups: replay (1), counter (1), "
                                 "learner (1), actor (2), monitor (1), evaluator (1)")

