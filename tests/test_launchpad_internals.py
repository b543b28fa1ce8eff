"""launch/nodes/launchpad_internals.py against the pinned Launchpad: each piece it relies on is
there, with the signature it calls, and does what `launch.runtime.entry` needs. A failure names
the piece that changed; launchpad_internals.py is where to adapt."""

import inspect
import json
import subprocess
import sys

import launchpad as lp
import pytest
from launchpad import context
from launchpad.launch import worker_manager

from test_program import ROOT

WHERE = "adapt launch/nodes/launchpad_internals.py"


def require(condition: bool, what: str) -> None:
    if not condition:
        pytest.fail(f"The installed Launchpad changed: {what}; {WHERE}.")


def parameters(function) -> list:
    return list(inspect.signature(function).parameters)


def test_the_pieces_are_there_with_the_signatures_called():
    require(hasattr(worker_manager, "WorkerManager"), "launchpad.launch.worker_manager.WorkerManager is gone")
    require("register_in_thread" in parameters(worker_manager.WorkerManager.__init__),
            "WorkerManager() takes no register_in_thread")
    require(hasattr(lp, "LaunchType") and hasattr(lp.LaunchType, "LOCAL_MULTI_PROCESSING"),
            "lp.LaunchType.LOCAL_MULTI_PROCESSING is gone")
    require(parameters(context.LaunchContext.initialize)[1:4] == ["launch_type", "launch_config", "program_stopper"],
            f"LaunchContext.initialize takes {parameters(context.LaunchContext.initialize)[1:]}")
    for name in ("launch_context", "function"):
        require(isinstance(getattr(lp.PyNode, name, None), property), f"PyNode.{name} is no longer a property")
    require(isinstance(getattr(lp.CourierNode, "courier_address", None), property), "CourierNode.courier_address is gone")
    require(isinstance(getattr(lp.ReverbNode, "reverb_address", None), property), "ReverbNode.reverb_address is gone")
    require(hasattr(lp.Address, "bind") and hasattr(lp, "get_port_from_address"), "Address.bind or get_port_from_address is gone")


# Run in a process of its own: Launchpad's stop machinery is one per process and takes its signals.
_NODE_IN_ITS_PROCESS = r"""
import json
import courier
import launchpad as lp
from absl import flags
from launch.nodes import launchpad_internals
from launch.runtime import ports

ran = []

class Node:
    def __init__(self, value, address):
        self._value, self._address = value, address
    def value(self):
        return self._value
    def run(self):  # the node's server is up at its bound address while run() runs
        ran.append(courier.Client(self._address, call_timeout=10).value() * 2)
        lp.stop()  # reaches the program stopper given to initialize_node

class Static:
    def __init__(self, address):
        self._address = address
    def build(self):
        return self._address

program = lp.Program("check")
courier_address, reverb_port = f"localhost:{ports.reserve_port()}", ports.reserve_port()
with program.group("courier"):
    program.add_node(lp.CourierNode(Node, 21, courier_address))
with program.group("replay"):
    program.add_node(lp.ReverbNode(lambda: []))
courier_node, reverb_node = program.groups["courier"][0], program.groups["replay"][0]
launchpad_internals.bind_address(courier_node.addresses[0], Static(courier_address))
launchpad_internals.bind_address(reverb_node.addresses[0], Static(f"localhost:{reverb_port}"))
stopped = []
flags.FLAGS(["check"])  # launch.runtime.entry runs under absl's app.run
launchpad_internals.start_stop_machinery()
launchpad_internals.initialize_node(courier_node, lambda: stopped.append(True))
launchpad_internals.run_node(courier_node)
print(json.dumps({"result": ran[0] if ran else None, "stopped": stopped,
                  "courier": [launchpad_internals.courier_address(courier_node), courier_address],
                  "reverb": [launchpad_internals.reverb_port(reverb_node), reverb_port]}))
"""


def test_a_node_runs_in_this_process_as_the_entry_point_runs_it():
    result = subprocess.run([sys.executable, "-c", _NODE_IN_ITS_PROCESS], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    require(result.returncode == 0, f"running a node as launch.runtime.entry does failed:\n{result.stderr[-3000:]}")
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    require(seen["result"] == 42, "run_node did not serve the node at its bound address and run its run()")
    require(seen["stopped"] == [True], "lp.stop() in a node no longer calls the program stopper it was given")
    require(seen["courier"][0] == seen["courier"][1], f"a bound Courier address resolves to {seen['courier'][0]}")
    require(seen["reverb"][0] == seen["reverb"][1], f"a bound Reverb address gives port {seen['reverb'][0]}")
