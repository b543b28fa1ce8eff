"""The program's nodes: actors, evaluator, monitor (the learner is in learner_node, the counter
in counter, the replay loader in loading; the replay server is stock).

Each node builds its own objects in its own process from the plain config it is
given, and returns from `run()` when the program stops, so shutdown is clean.
"""

import os
import threading
import time
from typing import Optional, Tuple

import jax
import launchpad as lp
import numpy as np
from dm_control.rl import control

import agents
import environments
import replay
from launch import counter as counter_node
from launch import launching, loading, rpc, summary
from launch.actor import Actor, non_finite_step_fields
from launch.config import ExperimentConfig
from launch.faults import RunError
from launch.metrics import MetricsWriter
from launch.rpc import ProgramStopped, StoppableClient, final_client


def reverb_address(client) -> str:
    """The server address of a reverb.Client (Reverb 0.7 keeps it only in this attribute)."""
    return client._server_address  # pylint: disable=protected-access


def write_json(config: ExperimentConfig, name: str, data: dict) -> None:
    """Writes run_dir/<name> atomically (a reader never sees half a file)."""
    summary.write_json(os.path.join(config.run_dir, name), data)


# At a stop a node's loop gets this long to return; then the node returns without it.
_ABANDON_AFTER_S = 6.0


def run_off_main_thread(loop, name: str, stop: threading.Event = None) -> None:
    """Runs `loop` in a worker thread and waits for it, keeping this thread free for signals.

    Python runs signal handlers only on the main thread, between bytecodes. A node whose
    main thread is blocked in a C++ call (a Reverb insert held by the rate limiter) never
    sees SIGTERM, so the stop handler that would unblock it never runs. A loop still in a
    call no stop handler reaches (a restarted actor still connecting its writer) `_ABANDON_AFTER_S`
    after `stop` is left behind: the node returns, rather than be killed with its process.
    """
    errors = []

    def target():
        try:
            loop()
        except BaseException as error:  # re-raised in the calling thread
            errors.append(error)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    stopped_at = None
    while thread.is_alive():
        thread.join(0.1)
        if stop is not None and stop.is_set():
            stopped_at = stopped_at or time.time()
            if time.time() - stopped_at > _ABANDON_AFTER_S:
                print(f"{name}: still busy {_ABANDON_AFTER_S:.0f} s after the stop; left behind", flush=True)
                return
    if errors:
        raise errors[0]


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
    """Runs one `launch.actor.Actor` until the program stops: RPC clients, files and the stop."""

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
                      counter=counter, log=log, restart=launching.node_attempt())
        # An insert blocked by the rate limiter (the learner has stopped sampling) would
        # never see the stop event: closing the writer on stop makes it return with an error.
        lp.register_stop_handler(actor.writer.close)
        try:
            loading.wait_for_loaded_data(config, self._replay_client, stop)
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
            write_json(config, f"actor_{actor_id}.json", actor.summary())


class EvaluatorNode:
    """Runs the greedy policy every `eval_every_learner_steps` learner steps; one metrics row each time.

    metrics/evaluator.csv: env_steps, learner_step, mean_return, std_return, episodes, wall_time_s.
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
        layout = env.observation_layout
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
                returns, problem = [], None
                for _ in range(config.eval_episodes):
                    timestep, episode_return, episode_steps = env.reset(), 0.0, 0
                    while not timestep.last() and not stop.is_set():
                        episode_steps += 1
                        try:
                            timestep = env.step(np.asarray(greedy_action(params, timestep.observation)))
                        except control.PhysicsError as error:
                            problem = f"PhysicsError ({error})"
                            break
                        fields = non_finite_step_fields(timestep, layout)
                        if fields:
                            problem = f"NaN or infinity in {', '.join(fields)}"
                            break
                        episode_return += float(timestep.reward)
                    if problem is not None:
                        break
                    if not timestep.last():
                        return  # stopped mid-episode: no partial row
                    returns.append(episode_return)
                if problem is not None:
                    # A mean over the episodes before it would be another figure: no row this time.
                    message = (f"evaluator, task {config.environment.task}, policy {version}: {problem} at episode "
                               f"step {episode_steps}")
                    if config.non_finite_env_fatal:
                        raise RunError(f"{message}. experiment.non_finite_env_fatal is on, so this ends the run; "
                                       "--set=experiment.non_finite_env_fatal=false skips that evaluation instead.")
                    print(f"{message}; this evaluation is skipped", flush=True)
                else:
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


class Monitor:
    """Watches the program's totals: reports progress, and stops the program at `max_env_steps`.

    Every poll it reports rates and table sizes to the counter (the launcher's progress line
    reads them there); every `log_every_s` it adds a row to metrics/progress.csv.
    """

    def __init__(self, config: ExperimentConfig, counter, replay_client, poll_seconds: float = 0.25):
        self._config = config
        self._counter = counter
        self._replay_client = replay_client
        self._poll_seconds = poll_seconds

    def _table_sizes(self) -> dict:
        """replay_size: the online table's items; offline_size: RaE's table, when there is one (-1: unknown)."""
        sizes = {"replay_size": -1}
        if self._config.rae is not None:
            sizes["offline_size"] = -1
        try:
            info = self._replay_client.server_info(timeout=1)
        except Exception:  # the server is going away with the program: leave the figures out
            return sizes
        sizes["replay_size"] = int(info[replay.ONLINE_TABLE].current_size)
        if self._config.rae is not None:
            sizes["offline_size"] = int(info[replay.OFFLINE_TABLE].current_size)
        return sizes

    def run(self):
        stop = lp.stop_event()
        config = self._config
        counter = StoppableClient(self._counter, stop)
        log = MetricsWriter(config.run_dir, "progress", step_key="env_steps")
        start = last_time = time.time()
        last_env, last_learner, logged_time = 0, 0, start
        env_rate = learner_rate = 0.0
        try:
            while not stop.wait(self._poll_seconds):
                counts = counter.get_counts()
                env_steps, learner_steps = int(counts.get("actor_steps", 0)), int(counts.get("learner_steps", 0))
                now = time.time()
                # Rates over the last ~2 s: smooth enough to read, recent enough to follow changes.
                mix = min(1.0, (now - last_time) / 2.0)
                env_rate += mix * ((env_steps - last_env) / (now - last_time) - env_rate)
                learner_rate += mix * ((learner_steps - last_learner) / (now - last_time) - learner_rate)
                last_env, last_learner, last_time = env_steps, learner_steps, now
                progress = {
                    "env_steps": env_steps, "learner_steps": learner_steps, "episodes": int(counts.get("actor_episodes", 0)),
                    "env_steps_per_s": env_rate, "learner_steps_per_s": learner_rate,
                    **self._table_sizes(), "elapsed_s": now - start, "max_env_steps": config.max_env_steps,
                }
                counter.report_progress({k: v for k, v in progress.items() if k.endswith("_per_s") or k.endswith("_size")})
                if now - logged_time >= config.log_every_s:
                    log.write({k: v for k, v in progress.items() if k != "max_env_steps"}, now)
                    logged_time = now
                if env_steps >= config.max_env_steps:
                    lp.stop()
                    return
        except ProgramStopped:
            return
        finally:
            log.close()
