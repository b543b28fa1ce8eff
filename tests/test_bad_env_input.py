"""Bad input from an environment (a NaN or infinity, a crashed simulator step): the actor and the
evaluator end that episode, store nothing of the bad step, log it and go on, or end the run when
`experiment.non_finite_env_fatal` is on."""

import itertools
import threading

import numpy as np
import pytest
import reverb

import replay
from environments import environment_spec
from experiments import configs
from launch.loops.actor import Actor
from launch.nodes import evaluator as evaluator_node
from launch.rundir import metrics
from launch.faults import RunError
from launch.nodes.actor import PolicyServer
from replay import experience

EPISODE, N_STEP, GAMMA = 6, 2, 0.9
# Environment 0's step calls (1-based) that go wrong. Episodes of environment 0: calls 1-3 (cut
# at its 3rd step), 4-9 (whole), 10-12 (cut at its 3rd), 13-18 (cut at its 6th and last), 19-24
# (whole); environment 1 runs 4 whole episodes meanwhile. 24 calls end both environments' episodes.
NAN_OBSERVATION, INF_REWARD, PHYSICS_NAN = 3, 12, 18
CALLS = 24
TASK = "cartpole:swingup"


def _config(tmp_path, *overrides):
    return configs.make_experiment_config(
        agent="mpo", task=TASK, run_dir=str(tmp_path), preset="debug", envs_per_actor=2,
        overrides=[f"environment.max_episode_steps={EPISODE}", f"replay.n_step={N_STEP}", f"replay.discount={GAMMA}",
                   "experiment.eval_episodes=2", *overrides])


def _inject_faults(env, faults):
    """Makes env.step go wrong at the calls in `faults`: {call: "observation" | "reward" | "physics"}."""
    step, calls = env.step, itertools.count(1)
    velocity = env.observation_layout["velocity"].start + 1  # cartpole: position [0:3], velocity [3:5]

    def faulty_step(action):
        fault = faults.get(next(calls))
        if fault == "physics":
            env.physics.data.qpos[:] = np.nan  # MuJoCo itself then finds the state invalid
        timestep = step(action)
        if fault == "observation":
            observation = timestep.observation.copy()
            observation[velocity] = np.nan
            timestep = timestep._replace(observation=observation)
        if fault == "reward":
            timestep = timestep._replace(reward=np.float32(np.inf))
        return timestep

    env.step = faulty_step


@pytest.fixture
def make_actor(tmp_path):
    """Actors with a real Reverb server whose online table is a queue: reading it back drains
    every item once, in insertion order."""
    made = []

    def make(*overrides):
        config = _config(tmp_path, *overrides)
        spec = environment_spec(config.environment)
        table = reverb.Table.queue(replay.ONLINE_TABLE, max_size=1000, signature=replay.transition_signature(spec))
        server = reverb.Server([table], port=None)
        client = reverb.Client(f"localhost:{server.port}")
        counter = CountingCounter()
        actor = Actor(config, 0, client, PolicyServer(config, spec), counter=counter)
        made.append((actor, server))
        return config, client, actor, counter

    yield make
    for actor, server in made:
        actor.close()
        server.stop()


class CountingCounter:
    """The counter's `increment`, keeping the totals ("actor_" + key, as CountBuffer does)."""

    def __init__(self):
        self.counts = {}

    def increment(self, **counts):
        for key, value in counts.items():
            self.counts[f"actor_{key}"] = self.counts.get(f"actor_{key}", 0) + value


def _items(client, count: int) -> np.ndarray:
    """[count, size]: the queue's items, all of them."""
    assert client.server_info()[replay.ONLINE_TABLE].current_size == count
    samples = client.sample(replay.ONLINE_TABLE, num_samples=count, emit_timesteps=False)
    return np.stack([np.asarray(sample.data[0]).reshape(-1) for sample in samples])


def _transition(episode: dict, t: int) -> tuple:
    """The n-step transition of recorded step t, worked out from the recording; an episode without
    a LAST step bootstraps from its last recorded observation."""
    k = min(N_STEP, len(episode["step_type"]) - 1 - t)
    reward = sum(GAMMA**j * float(episode["reward"][t + 1 + j]) for j in range(k))
    discount = GAMMA**k * float(np.prod(episode["discount"][t + 1:t + 1 + k]))
    return episode["observation"][t], episode["action"][t], reward, discount, episode["observation"][t + k]


def test_bad_steps_end_their_episode_are_never_stored_and_acting_goes_on(make_actor, capsys):
    config, client, actor, counter = make_actor()
    actor.start()
    _inject_faults(actor._envs[0], {NAN_OBSERVATION: "observation", INF_REWARD: "reward", PHYSICS_NAN: "physics"})
    actor.run(2 * CALLS)
    actor.writer.flush()
    for recorder in actor._recorders:
        recorder.flush()

    # Environment k's c-th step is the actor's (2 (c - 1) + k + 1)-th; the bad step is the episode's (steps + 1)-th.
    log = [line for line in capsys.readouterr().out.splitlines() if line.startswith("actor 0 env")]
    ends = "; the episode ends before that step (which is not stored) and a new one begins"
    assert log == [
        f"actor 0 env 0, task {TASK}: NaN or infinity in observation.velocity at episode step 3 (actor step 5){ends}",
        f"actor 0 env 0, task {TASK}: NaN or infinity in reward at episode step 3 (actor step 23){ends}",
        f"actor 0 env 0, task {TASK}: PhysicsError (Physics state is invalid. Warning(s) raised: mjWARN_BADQPOS) "
        f"at episode step 6 (actor step 35){ends}"]

    # The bad steps were simulated, so they count as steps; only whole episodes count as episodes.
    actor.flush_counts()
    assert actor.steps == 2 * CALLS and actor.bad_env_steps == 3
    assert counter.counts == {"actor_steps": 2 * CALLS, "actor_episodes": 2 + 4, "actor_bad_env_steps": 3}
    assert actor.summary()["bad_env_steps"] == 3 and len(actor.episode_returns) == 6

    # On disk: the cut episodes hold their good steps and no LAST; a new episode follows each.
    streams = experience.actor_directories(config.run_dir)
    episodes = [list(experience.read_episodes(stream)) for stream in streams]
    assert [len(e["step_type"]) for e in episodes[0]] == [3, EPISODE + 1, 3, EPISODE, EPISODE + 1]
    assert [int(e["step_type"][-1]) for e in episodes[0]] == [1, 2, 1, 1, 2]
    assert [len(e["step_type"]) for e in episodes[1]] == [EPISODE + 1] * 4
    recorded = [e for stream in episodes for e in stream]
    for episode in recorded:
        for column in experience.COLUMNS:
            assert np.isfinite(episode[column]).all(), column

    # In replay: one item per recorded step with a recorded next step (2 + 6 + 2 + 5 + 6 and 4 x 6),
    # each exactly the n-step transition of that step, cut episodes bootstrapping from their last good one.
    items = _items(client, 21 + 24)
    assert np.isfinite(items).all()
    layout = replay.TransitionLayout.of(environment_spec(config.environment))
    expected = {(episode["observation"][t].tobytes(), episode["action"][t].tobytes()): _transition(episode, t)
                for episode in recorded for t in range(len(episode["step_type"]) - 1)}
    assert len(expected) == len(items)
    for item in items:
        fields = layout.unpack(item)
        observation, action, reward, discount, next_observation = expected.pop(
            (fields["observation"].tobytes(), fields["action"].tobytes()))
        assert fields["reward"] == pytest.approx(reward, rel=1e-6)
        assert fields["discount"] == pytest.approx(discount, rel=1e-6)
        np.testing.assert_array_equal(fields["next_observation"], next_observation)
    assert not expected


@pytest.mark.parametrize("fault, problem", [
    ("observation", "NaN or infinity in observation.velocity"),
    ("reward", "NaN or infinity in reward"),
    ("physics", "PhysicsError (Physics state is invalid. Warning(s) raised: mjWARN_BADQPOS)")])
def test_with_the_flag_on_a_bad_step_ends_the_run_naming_it(make_actor, fault, problem):
    _, client, actor, _ = make_actor("experiment.non_finite_env_fatal=true")
    actor.start()
    _inject_faults(actor._envs[1], {3: fault})
    with pytest.raises(RunError) as raised:
        actor.run(100)
    assert str(raised.value) == (
        f"actor 0 env 1, task {TASK}: {problem} at episode step 3 (actor step 6). experiment.non_finite_env_fatal "
        "is on, so this ends the run; --set=experiment.non_finite_env_fatal=false ends just that episode, logs it "
        "and acts on.")
    # Raised before the step's writes: each environment's first step is in (n = 2), nothing after it.
    actor.writer.flush()
    assert np.isfinite(_items(client, 2)).all()


class _Learner:
    """A learner whose policy is newer at every evaluation; stops the evaluator after `evaluations`."""

    def __init__(self, config, stop: threading.Event, evaluations: int):
        self._server = PolicyServer(config, environment_spec(config.environment))
        self._stop, self._left, self._version = stop, evaluations, 0

    def get_policy_params(self, newer_than: int = -1):
        if self._left == 0:
            self._stop.set()
            return self._version, None
        self._left -= 1
        self._version = newer_than + 1
        return self._version, self._server.get_policy_params()[1]


class _Counter:
    def get_counts(self):
        return {"actor_steps": 7}

    def node_finished(self, node):
        pass

    def report_counts(self, *args):
        pass


def _run_evaluator(monkeypatch, config, faults, evaluations):
    make_environment = evaluator_node.environments.make_environment

    def faulty_environment(environment_config):
        env = make_environment(environment_config)
        _inject_faults(env, faults)
        return env

    # No RPC here: the node talks to these objects directly.
    monkeypatch.setattr(evaluator_node.environments, "make_environment", faulty_environment)
    monkeypatch.setattr(evaluator_node, "StoppableClient", lambda target, stop: target)
    monkeypatch.setattr(evaluator_node, "final_client", lambda target: target)
    stop = threading.Event()
    evaluator = evaluator_node.EvaluatorNode(config, _Learner(config, stop, evaluations), _Counter())
    evaluator._evaluate_periodically(stop)


def test_the_evaluator_skips_an_evaluation_with_a_bad_step_and_goes_on(tmp_path, monkeypatch, capsys):
    config = _config(tmp_path)
    # The first evaluation's second episode crashes at its 4th step (call 6 + 4); the second evaluation is clean.
    _run_evaluator(monkeypatch, config, {EPISODE + 4: "physics"}, evaluations=2)
    log = [line for line in capsys.readouterr().out.splitlines() if line.startswith("evaluator")]
    assert log == [f"evaluator, task {TASK}, policy 0: PhysicsError (Physics state is invalid. Warning(s) raised: "
                   "mjWARN_BADQPOS) at episode step 4; this evaluation is skipped"]
    rows = metrics.read_rows(metrics.csv_path(config.run_dir, "evaluator"))
    assert [(row["learner_step"], row["episodes"]) for row in rows] == [(config.eval_every_learner_steps, 2)]
    assert np.isfinite(rows[0]["mean_return"])


def test_with_the_flag_on_the_evaluator_ends_the_run(tmp_path, monkeypatch):
    config = _config(tmp_path, "experiment.non_finite_env_fatal=true")
    with pytest.raises(RunError, match=r"evaluator, task cartpole:swingup, policy 0: NaN or infinity in reward at "
                                       r"episode step 2\. experiment\.non_finite_env_fatal is on"):
        _run_evaluator(monkeypatch, config, {2: "reward"}, evaluations=1)
