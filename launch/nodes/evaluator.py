"""The evaluator node: the greedy policy's returns every `eval_every_learner_steps` learner steps."""

import threading
import time

import launchpad as lp
import numpy as np

import agents
import environments
from launch.config import ExperimentConfig
from launch.faults import RunError
from launch.loops.episodes import EpisodeRunner
from launch.nodes import counter as counter_node
from launch.nodes.off_main_thread import run_off_main_thread
from launch.nodes.rpc import ProgramStopped, StoppableClient, final_client
from launch.rundir.metrics import MetricsWriter


class EvaluatorNode:
    """Runs the greedy policy every `eval_every_learner_steps` learner steps; one metrics row each time.

    metrics/evaluator.csv: env_steps, learner_step, mean_return, std_return, episodes, wall_time_s.
    An evaluation in which a step goes wrong (a NaN or infinity, crashed physics) gets no row:
    a mean over the episodes before it would be another figure.
    """

    def __init__(self, config: ExperimentConfig, learner, counter):
        self._config = config
        self._learner_handle = learner
        self._counter_handle = counter

    def run(self):
        stop = lp.stop_event()
        run_off_main_thread(lambda: self._evaluate_periodically(stop), name="evaluator", stop=stop)

    def _evaluate_periodically(self, stop: threading.Event):
        config = self._config
        learner = StoppableClient(self._learner_handle, stop)
        counter = StoppableClient(self._counter_handle, stop)
        env = environments.make_environment(config.evaluator_environment())
        _, greedy_action = agents.make_policy_fns(
            agents.Networks(config.learner, env.action_spec().shape[0], env.observation_spec().shape))
        start = time.time()
        log = MetricsWriter(config.run_dir, "evaluator", step_key="env_steps")
        next_eval = 0
        try:
            while not stop.wait(0.5):
                version, params = learner.get_policy_params(newer_than=next_eval - 1)
                if params is None:
                    continue
                params = agents.params_on_cpu(params)
                runner = EpisodeRunner(env, lambda observation: np.asarray(greedy_action(params, observation)),
                                       check_steps=True)
                episodes = runner.run(config.eval_episodes, stop.is_set)
                last = episodes[-1]
                if last.problem is not None:
                    message = (f"evaluator, task {config.environment.task}, policy {version}: {last.problem} at "
                               f"episode step {last.steps + 1}")
                    if config.non_finite_env_fatal:
                        raise RunError(f"{message}. experiment.non_finite_env_fatal is on, so this ends the run; "
                                       "--set=experiment.non_finite_env_fatal=false skips that evaluation instead.")
                    print(f"{message}; this evaluation is skipped", flush=True)
                elif not last.finished:
                    return  # stopped mid-episode: no partial row
                else:
                    returns = [episode.total_return for episode in episodes]
                    env_steps = int(counter.get_counts().get("actor_steps", 0))
                    now = time.time()
                    log.write({"env_steps": env_steps, "learner_step": version, "mean_return": float(np.mean(returns)),
                               "std_return": float(np.std(returns)), "episodes": len(returns),
                               "wall_time_s": now - start}, now)
                next_eval = version + config.eval_every_learner_steps
        except ProgramStopped:
            pass
        finally:
            env.close()
            log.close()
            counter_node.finish(final_client(self._counter_handle), "evaluator")
