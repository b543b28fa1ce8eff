"""python -m experiments.bench {env,learner,actor,actor_costs,scaling,datapath,multinode,learning,rae,faults,chaos,replay_frames} [flags]  (--help after a name for its flags)."""

import argparse
import importlib
import sys

# Imported only when chosen: the learner benchmark must run on accelerator images
# that have JAX but not dm_control, TensorFlow or Reverb.
BENCHMARKS = {
    "env": ("experiments.bench.env_bench", "raw dm_control vs Relay's environment, steps/s"),
    "learner": ("experiments.bench.learner_bench", "learner SGD steps/s, compile time, memory, FLOP/s"),
    "actor": ("experiments.bench.actor_bench", "one actor in the program vs raw dm_control, steps/s"),
    "actor_costs": ("experiments.bench.actor_costs_bench", "an actor step's parts, and the physics alone vs in the loop"),
    "scaling": ("experiments.bench.scaling_bench", "total env steps/s with 1, 2, 4 actors"),
    "datapath": ("experiments.bench.datapath_bench", "learner SGD steps/s fed from Reverb vs synthetic batches"),
    "multinode": ("experiments.bench.multinode_bench", "actors on 1 vs 2 hosts, learner fed across hosts (namespaces)"),
    "learning": ("experiments.bench.learning_bench", "agents trained for a step budget: curves CSV + PNG"),
    "rae": ("experiments.bench.rae_bench", "from scratch vs replaying an earlier run (RaE): curves CSV + PNG"),
    "faults": ("experiments.bench.faults_bench", "a node's process SIGKILLed mid-run: recovery time, data lost"),
    "chaos": ("experiments.bench.chaos_bench", "random SIGKILLs of node processes and supervisors through a whole run"),
    "replay_frames": ("experiments.bench.replay_frames_bench",
                      "pixel replay: Reverb bytes/item, sampler CPU/batch, frames once vs packed; recorder cost"),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__)
    subparsers = parser.add_subparsers(dest="benchmark", required=True)
    for name, (_, help_text) in BENCHMARKS.items():
        subparsers.add_parser(name, help=help_text, add_help=False)
    chosen = parser.parse_known_args(argv[:1])[0].benchmark
    module = importlib.import_module(BENCHMARKS[chosen][0])
    sub = argparse.ArgumentParser(prog=f"python -m experiments.bench {chosen}", description=module.__doc__)
    module.add_arguments(sub)
    return module.run(sub.parse_args(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
