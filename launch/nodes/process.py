"""What a node knows of the process it runs in, set by its supervisor (`launch.runtime.entry`)."""

import os

# Actors, the evaluator, the monitor, replay and the counter never touch an accelerator:
# N actors must not open N GPU contexts. TensorFlow (CPU build) never sees a GPU either way.
# The entry point sets this in every node process but the learner's.
CPU_ONLY_ENV = {"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
# Set in a node process: how many times its supervisor has restarted the node.
ATTEMPT_ENV = "RELAY_NODE_ATTEMPT"


def node_attempt() -> int:
    """0 in a node's first process (and in every local_mt thread); k in its k-th restart."""
    return int(os.environ.get(ATTEMPT_ENV, "0"))
