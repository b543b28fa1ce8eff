"""`make_program(config, spec) -> lp.Program`: the nodes of one experiment and their wiring.

It knows nothing of how the program is launched (threads, processes, hosts).
"""

import launchpad as lp

from launch.config import ExperimentConfig
from launch.nodes.actor import ActorNode, PolicyServer
from launch.nodes.counter import CounterNode
from launch.nodes.evaluator import EvaluatorNode
from launch.nodes.learner import LearnerNode
from launch.nodes.loader import ReplayLoader
from launch.nodes.monitor import Monitor
from launch.nodes.replay_server import ReplayNode


def _add_replay_and_counter(program: lp.Program, config: ExperimentConfig, spec, finishing_nodes):
    with program.group("replay"):
        replay_handle = program.add_node(ReplayNode(config, spec))
    with program.group("counter"):
        counter = program.add_node(lp.CourierNode(CounterNode, config, tuple(finishing_nodes)))
    return replay_handle, counter


def _add_actors_and_monitor(program: lp.Program, config: ExperimentConfig, replay_handle, learner, counter):
    with program.group("actor"):
        for actor_id in range(config.num_actors):
            program.add_node(lp.CourierNode(ActorNode, config, actor_id, replay_handle, learner, counter))
    with program.group("monitor"):
        program.add_node(lp.CourierNode(Monitor, config, counter, replay_handle))


def _actor_names(config: ExperimentConfig):
    return [f"actor_{actor_id}" for actor_id in range(config.num_actors)]


def make_program(config: ExperimentConfig, spec) -> lp.Program:
    """Replay, counter, learner, actors, evaluator and monitor: a training run.

    `spec`: the environment's acme EnvironmentSpec, computed once by the launcher."""
    program = lp.Program("relay")
    replay_handle, counter = _add_replay_and_counter(program, config, spec,
                                                     _actor_names(config) + ["learner", "evaluator"])
    if config.rae is not None or config.refill_items:
        with program.group("loader"):
            program.add_node(lp.CourierNode(ReplayLoader, config, spec, replay_handle))
    with program.group("learner"):
        learner = program.add_node(lp.CourierNode(LearnerNode, config, spec, replay_handle, counter))
    _add_actors_and_monitor(program, config, replay_handle, learner, counter)
    with program.group("evaluator"):
        program.add_node(lp.CourierNode(EvaluatorNode, config, learner, counter))
    return program


def make_acting_program(config: ExperimentConfig, spec) -> lp.Program:
    """The training program's actors, replay, counter and monitor, with a policy server in the
    learner's place that hands out the initial parameters and never trains (actor benchmarks)."""
    program = lp.Program("relay-acting")
    replay_handle, counter = _add_replay_and_counter(program, config, spec, _actor_names(config))
    with program.group("learner"):
        policy_server = program.add_node(lp.CourierNode(PolicyServer, config, spec))
    _add_actors_and_monitor(program, config, replay_handle, policy_server, counter)
    return program
