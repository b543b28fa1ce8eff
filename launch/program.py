"""`make_program(config, spec) -> lp.Program`: the nodes of one experiment and their wiring.

It knows nothing of how the program is launched (threads, processes, hosts).
"""

import functools
import os

import launchpad as lp
import reverb

import replay
from launch import learner_node, loading, nodes
from launch.config import ExperimentConfig
from launch.counter import CounterNode


def _replay_tables(config: ExperimentConfig, spec):
    tables = [replay.make_online_table(config.online_replay(), spec, refill_items=config.refill_items)]
    if config.rae is not None:
        tables.append(replay.make_offline_table(config.rae.offline_items, spec, replay.OFFLINE_TABLE))
    return tables


def _replay_checkpointer(run_dir: str):
    return reverb.checkpointers.DefaultCheckpointer(os.path.join(run_dir, "replay_checkpoint"))


def _add_replay_and_counter(program: lp.Program, config: ExperimentConfig, spec, finishing_nodes):
    with program.group("replay"):
        # Reverb's default checkpointer would make a directory under /tmp; a run writes only in its own.
        replay_handle = program.add_node(lp.ReverbNode(
            functools.partial(_replay_tables, config, spec),
            checkpoint_ctor=functools.partial(_replay_checkpointer, config.run_dir),
        ))
    with program.group("counter"):
        counter = program.add_node(lp.CourierNode(CounterNode, config, tuple(finishing_nodes)))
    return replay_handle, counter


def _add_actors_and_monitor(program: lp.Program, config: ExperimentConfig, replay_handle, learner, counter):
    with program.group("actor"):
        for actor_id in range(config.num_actors):
            program.add_node(lp.CourierNode(nodes.ActorNode, config, actor_id, replay_handle, learner, counter))
    with program.group("monitor"):
        program.add_node(lp.CourierNode(nodes.Monitor, config, counter, replay_handle))


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
            program.add_node(lp.CourierNode(loading.ReplayLoader, config, replay_handle))
    with program.group("learner"):
        learner = program.add_node(lp.CourierNode(learner_node.LearnerNode, config, spec, replay_handle, counter))
    _add_actors_and_monitor(program, config, replay_handle, learner, counter)
    with program.group("evaluator"):
        program.add_node(lp.CourierNode(nodes.EvaluatorNode, config, learner, counter))
    return program


def make_acting_program(config: ExperimentConfig, spec) -> lp.Program:
    """The training program's actors, replay, counter and monitor, with a policy server in the
    learner's place that hands out the initial parameters and never trains (actor benchmarks)."""
    program = lp.Program("relay-acting")
    replay_handle, counter = _add_replay_and_counter(program, config, spec, _actor_names(config))
    with program.group("learner"):
        policy_server = program.add_node(lp.CourierNode(nodes.PolicyServer, config, spec))
    _add_actors_and_monitor(program, config, replay_handle, policy_server, counter)
    return program
