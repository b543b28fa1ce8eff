"""The learner node: runs `launch.loops.learner.LearnerLoop` and serves its policy to actors and the evaluator."""

from typing import Optional, Tuple

import launchpad as lp

import agents
import replay
from launch.config import ExperimentConfig
from launch.loops import learner as learner_loop
from launch.nodes import counter as counter_node
from launch.nodes.process import node_attempt
from launch.nodes.rpc import ProgramStopped, StoppableClient, final_client


def final_counts(counter_handle, learner_counts: counter_node.CountBuffer, fallback: dict) -> dict:
    """At a stop: sends the learner's last steps, says the learner has finished reporting, and
    returns the counter's totals; `fallback` (the last totals seen) if the counter is gone."""
    client = final_client(counter_handle)
    counter_node.finish(client, "learner", learner_counts)
    try:
        return client.get_counts()
    except Exception:  # gone with the program
        return dict(fallback)


class LearnerNode:
    """Trains until the program stops; `get_policy_params` hands out its newest acting parameters."""

    def __init__(self, config: ExperimentConfig, spec, replay_client, counter):
        self._config = config
        self._replay_address = replay_client.server_address
        self._counter_handle = counter
        self._learner = agents.Learner(config.learner, spec.observations.shape, spec.actions.shape[0])
        self._learner.check_batch_size(config.replay.batch_size)
        self._layout = replay.layout_of(spec)
        self._state = learner_loop.initial_state(config, self._learner, restarted=node_attempt() > 0)
        # Served until the loop starts; then the loop's.
        self._loop: Optional[learner_loop.LearnerLoop] = None
        self._initial: Tuple[int, dict] = (int(self._state.steps), learner_loop.host_copy(
            self._learner.networks.acting_params(self._state.policy_params, self._state.critic_params)))

    def get_policy_params(self, newer_than: int = -1) -> Tuple[int, Optional[dict]]:
        """(version, numpy policy params: `Networks.acting_params`, the encoder's too for pixels);
        the version is the learner step they come from.

        The params are None when the version is not above `newer_than`: a caller that has
        them already is not sent ~0.5 MB again."""
        version, params = self._initial if self._loop is None else self._loop.published
        return (version, params) if version > newer_than else (version, None)

    def run(self):
        stop = lp.stop_event()
        first_step = self._initial[0]
        batches = learner_loop.replay_batches(self._config, self._layout, self._replay_address, self._learner,
                                              first_step, stop)
        if batches is None:  # the program stopped before the replay server answered: nothing was trained
            return
        # One try a send: while the counter is away (restarting) the learner trains on.
        learner_counts = counter_node.CountBuffer(StoppableClient(self._counter_handle, stop, tries=1), prefix="learner")
        loop = learner_loop.LearnerLoop(self._config, self._learner, self._state, batches,
                                        counter=StoppableClient(self._counter_handle, stop), counts=learner_counts)
        self._state = None  # the loop holds (and donates) it now
        self._loop = loop
        try:
            loop.run(stop.is_set)
        except ProgramStopped:
            pass
        finally:
            loop.settle()
            # The counter's totals if it still answers, else the last ones seen; the learner's
            # own step count is exact. First: the counter waits only so long, and closing the
            # batches can take seconds.
            loop.close(final_counts(self._counter_handle, learner_counts, loop.counter_totals))
