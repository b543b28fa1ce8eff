"""The actor node: one `launch.loops.actor.Actor` wired to the learner, replay, the counter and the stop.
`PolicyServer` stands in for the learner where nothing trains (the actor benchmarks)."""

import threading
from typing import Optional, Tuple

import jax
import launchpad as lp

import agents
from launch.config import ExperimentConfig
from launch.loops.actor import Actor
from launch.nodes import counter as counter_node
from launch.nodes import loader, rpc
from launch.nodes.off_main_thread import run_off_main_thread
from launch.nodes.process import node_attempt
from launch.nodes.rpc import ProgramStopped, StoppableClient, final_client
from launch.rundir.jsonio import write_json
from launch.rundir.metrics import MetricsWriter
from launch.rundir.paths import RunPaths


class PolicyServer:
    """Serves the initial policy parameters as a learner would, and never trains."""

    def __init__(self, config: ExperimentConfig, spec):
        learner = agents.Learner(config.learner, spec.observations.shape, spec.actions.shape[0])
        state = learner.init(jax.random.PRNGKey(config.seed))
        self._published = (0, jax.device_get(learner.networks.acting_params(state.policy_params, state.critic_params)))

    def get_policy_params(self, newer_than: int = -1) -> Tuple[int, Optional[dict]]:
        """As LearnerNode.get_policy_params."""
        version, params = self._published
        return (version, params) if version > newer_than else (version, None)


class _PolicySource:
    """The learner's policy for an actor: waited for until the actor has one; then a call the
    learner does not answer (it is being restarted) leaves the actor acting on what it has.
    After such a call the learner's next answer is taken whatever its version: a restarted
    learner goes on from its checkpoint, whose step may be below the version the actor holds."""

    def __init__(self, learner_handle, stop: threading.Event):
        self._waiting = StoppableClient(learner_handle, stop)
        self._once = StoppableClient(learner_handle, stop, tries=1)
        self._learner_was_away = False

    def get_policy_params(self, newer_than: int = -1):
        if newer_than < 0:
            return self._waiting.get_policy_params(newer_than=newer_than)
        try:
            answer = self._once.get_policy_params(newer_than=-1 if self._learner_was_away else newer_than)
        except ProgramStopped:
            raise
        except Exception as error:
            if not rpc.unavailable(error):
                raise
            if not self._learner_was_away:
                print(f"actor: the learner does not answer ({type(error).__name__}); acting on with policy "
                      f"{newer_than}", flush=True)
            self._learner_was_away = True
            return newer_than, None
        self._learner_was_away = False
        return answer


class ActorNode:
    """Runs one `launch.loops.actor.Actor` until the program stops: RPC clients, files and the stop."""

    def __init__(self, config: ExperimentConfig, actor_id: int, replay_client, learner, counter):
        self._config = config
        self._actor_id = actor_id
        self._replay_client = replay_client
        self._learner_handle = learner
        self._counter_handle = counter

    def run(self):
        # Launchpad's stop event is per node thread: fetched here, handed to the loop.
        stop = lp.stop_event()
        run_off_main_thread(lambda: self._act(stop), name=f"actor-{self._actor_id}", stop=stop)

    def _act(self, stop: threading.Event):
        config, actor_id = self._config, self._actor_id
        # One try a send: while the counter is away (restarting) the actor acts on, and its
        # next send carries the totals.
        counter = counter_node.CountBuffer(StoppableClient(self._counter_handle, stop, tries=1), prefix="actor",
                                           node=f"actor_{actor_id}")
        log = MetricsWriter(config.run_dir, f"actor_{actor_id}", step_key="actor_steps")
        actor = Actor(config, actor_id, self._replay_client, _PolicySource(self._learner_handle, stop),
                      counter=counter, log=log, restart=node_attempt())
        # An insert blocked by the rate limiter (the learner has stopped sampling) would
        # never see the stop event: closing the writer on stop makes it return with an error.
        lp.register_stop_handler(actor.writer.close)
        try:
            loader.wait_for_loaded_data(config, self._replay_client, stop)
            actor.start()
            while not stop.is_set():
                actor.step()
        except Exception:  # a closed writer or an abandoned call: expected only once stopping
            if not stop.is_set():
                raise
        finally:
            # The last counts first: the counter waits only so long for them.
            actor.flush_counts()  # into the buffer; `finish` sends it past the stop
            counter_node.finish(final_client(self._counter_handle), f"actor_{actor_id}", counter)
            actor.close()
            log.close()
            write_json(RunPaths(config.run_dir).node_totals(f"actor_{actor_id}"), actor.summary())
