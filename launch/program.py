"""`make_program(config) -> lp.Program`: the nodes of one experiment and their wiring.

It knows nothing of how the program is launched (threads, processes, hosts).
"""

import functools
import os

import launchpad as lp
import reverb
from acme.utils import counting

import replay
from launch import nodes
from launch.config import ExperimentConfig


def _replay_tables(config: ExperimentConfig, spec):
    return [replay.make_online_table(config.replay, spec)]


def _replay_checkpointer(run_dir: str):
    return reverb.checkpointers.DefaultCheckpointer(os.path.join(run_dir, "replay_checkpoint"))


def make_program(config: ExperimentConfig) -> lp.Program:
    spec = nodes.environment_spec(config)
    program = lp.Program("relay")
    with program.group("replay"):
        # Reverb's default checkpointer would make a directory under /tmp; a run writes only in its own.
        replay_handle = program.add_node(lp.ReverbNode(
            functools.partial(_replay_tables, config, spec),
            checkpoint_ctor=functools.partial(_replay_checkpointer, config.run_dir),
        ))
    with program.group("counter"):
        counter = program.add_node(lp.CourierNode(counting.Counter))
    with program.group("learner"):
        learner = program.add_node(lp.CourierNode(nodes.LearnerNode, config, replay_handle, counter))
    with program.group("actor"):
        for actor_id in range(config.num_actors):
            program.add_node(lp.CourierNode(nodes.ActorNode, config, actor_id, replay_handle, learner, counter))
    with program.group("evaluator"):
        program.add_node(lp.CourierNode(nodes.EvaluatorNode, config, learner, counter))
    with program.group("limiter"):
        program.add_node(lp.CourierNode(nodes.StepLimiter, config, counter))
    return program
