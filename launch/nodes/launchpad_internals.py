"""Every use of Launchpad (dm-launchpad 0.5.x, pinned) beyond its documented surface
(`lp.Program`, `lp.CourierNode`, `lp.ReverbNode`, `lp.launch`, `lp.stop`, `lp.stop_event`,
`lp.register_stop_handler`, `lp.wait_for_stop`), in one place.

Why Relay needs them: Launchpad launches a program's nodes itself (threads, processes,
its own multi-host back ends), while Relay's process-per-node launch types start each node
with `launch.runtime.entry`, on any host, under a supervisor. That entry point has to do
for one node what Launchpad's process launcher does: set up the stop machinery of the
process, give the node its launch context, bind the addresses of the nodes it calls, and
run it. `tests/test_launchpad_internals.py` fails, naming the piece, when the pinned
Launchpad changes under these functions.
"""

from typing import Callable

import launchpad as lp
from launchpad.launch import worker_manager


def start_stop_machinery() -> None:
    """Launchpad's stop handling in this process, as its process launcher sets it up: SIGTERM
    (and Ctrl-C) set the stop event and call the stop handlers; a node that has not returned
    10 s later is killed with its process."""
    worker_manager.WorkerManager(register_in_thread=True)


def initialize_node(node, program_stopper: Callable[[], None]) -> None:
    """Gives `node` the launch context of a node alone in its process; `lp.stop()` in it calls
    `program_stopper`."""
    node.launch_context.initialize(lp.LaunchType.LOCAL_MULTI_PROCESSING, None, program_stopper=program_stopper)


def run_node(node):
    """Runs the node's function (its `run()` for a Courier node) in this thread."""
    return node.function()


def bind_address(address, builder) -> None:
    """Fixes where `address` (one of a node's `addresses`) resolves to: `builder.build()`."""
    address.bind(builder)


def courier_address(node) -> str:
    """host:port of a Courier node once its program is launched or its address bound."""
    return node.courier_address.resolve()


def reverb_port(node) -> int:
    """The port a ReverbNode serves at once its address is bound."""
    return lp.get_port_from_address(node.reverb_address.resolve())
