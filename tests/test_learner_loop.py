"""The learner's loop (launch.loops.learner.LearnerLoop): what one step() does, and what the
learner node's loop leaves, against a live Reverb server filled by the episode runner."""

import os
import threading

import jax
import numpy as np
import pytest
import reverb

import agents
import environments
import replay
from experiments import configs
from launch.faults import RunError
from launch.loops.episodes import EpisodeRunner, uniform_random_policy
from launch.loops.learner import LearnerLoop, initial_state, replay_batches
from launch.rundir import checkpoints, metrics
from launch.rundir.jsonio import read_json
from tests.test_learner import learner_for, leaves, random_batch


def config_for(tmp_path, *overrides):
    return configs.make_experiment_config(
        agent="mpo", task="cartpole:swingup", run_dir=str(tmp_path), preset="debug", overrides=[
            "experiment.learner_publish_period=5", "experiment.checkpoint_every_learner_steps=20",
            "experiment.log_every_s=0.000001", *overrides])


class ListBatches:
    """Given batches in order, as a LearnerLoop's source; None (nothing sampled yet) when they run out."""

    def __init__(self, batches):
        self._batches, self.closed = list(batches), False

    def next(self, timeout=None):
        return self._batches.pop(0) if self._batches else None

    def close(self):
        self.closed = True


class Counter:
    """The counter's totals, as the node's RPC client gives them."""

    def __init__(self):
        self.calls = 0

    def get_counts(self):
        self.calls += 1
        return {"actor_steps": 1000.0 * self.calls}


class Counts:
    """The learner's CountBuffer: each set(steps=) kept."""

    def __init__(self):
        self.steps = []

    def set(self, steps):
        self.steps.append(steps)


def test_each_step_is_one_update_on_the_next_batch_and_publishing_checkpoints_and_logs_fall_due(tmp_path):
    config = config_for(tmp_path)
    learner = learner_for(config.learner)
    rng = np.random.default_rng(0)
    batches = [jax.tree_util.tree_map(np.asarray, random_batch(rng, batch_size=32)) for _ in range(23)]
    expected = initial_state(config, learner)
    for batch in batches:  # the updates the loop must make, made here directly
        expected, _ = learner.update(expected, batch)
    expected = jax.device_get(expected)

    source, counter, counts = ListBatches(batches), Counter(), Counts()
    loop = LearnerLoop(config, learner, initial_state(config, learner), source, counter=counter, counts=counts)
    assert all(loop.step() for _ in batches) and not loop.step()  # the 24th finds no batch and does nothing
    assert loop.steps == 23 and [leaf.tolist() for leaf in leaves(loop.state)] == [leaf.tolist() for leaf in leaves(expected)]
    # Published every 5 updates: the acting parameters of that step, a host copy.
    version, params = loop.published
    assert version == 20 and counts.steps == [5, 10, 15, 20]
    assert all(isinstance(leaf, np.ndarray) for leaf in jax.tree_util.tree_leaves(params))
    # A metrics row at each publication (log_every_s is tiny), a checkpoint at step 20 with the counter's totals.
    rows = metrics.read_rows(metrics.csv_path(config.run_dir, "learner"))
    assert [row["learner_step"] for row in rows] == [5, 10, 15, 20] and all(row["skipped_updates"] == 0 for row in rows)
    assert checkpoints.list_steps(config.run_dir) == [20]
    saved = checkpoints.load_latest(config.run_dir)[0]
    assert saved.meta["reason"] == "periodic" and saved.meta["counts"]["learner_steps"] == 20
    # Asked for at each row (steps 5, 10, 15) and before the checkpoint: its 4th answer.
    assert saved.meta["counts"]["actor_steps"] == 4000.0 and counter.calls == 5

    assert loop.settle() == 23 and counts.steps[-1] == 23
    loop.close({"actor_steps": 123.0})
    assert source.closed and checkpoints.list_steps(config.run_dir) == [20, 23]
    final = checkpoints.load_latest(config.run_dir)[0]
    assert final.meta["reason"] == "final" and final.meta["counts"] == {"actor_steps": 123.0, "learner_steps": 23.0}
    np.testing.assert_array_equal(final.state["policy_params"]["params"]["mean"]["kernel"],
                                  expected.policy_params["params"]["mean"]["kernel"])
    assert read_json(os.path.join(config.run_dir, "learner.json"))["learner_steps"] == 23


def test_updates_that_keep_coming_out_non_finite_stop_the_loop_with_a_run_error_after_the_row_that_shows_them(tmp_path):
    config = config_for(tmp_path, "learner.learning_rate=1e30", "experiment.max_nonfinite_updates_in_a_row=3")
    learner = learner_for(config.learner)
    rng = np.random.default_rng(1)
    loop = LearnerLoop(config, learner, initial_state(config, learner),
                       ListBatches([random_batch(rng, batch_size=32) for _ in range(40)]))
    with pytest.raises(RunError, match="3 learner updates in a row had a NaN or inf"):
        for _ in range(40):
            loop.step()
    # The first update applied (its loss was finite), the next ones were skipped: the state stayed at step 1.
    assert loop.settle() == int(jax.device_get(loop.state.steps)) == 1
    rows = metrics.read_rows(metrics.csv_path(config.run_dir, "learner"))
    assert rows[-1]["skipped_updates"] >= 3
    loop.close()
    assert checkpoints.load_latest(config.run_dir)[0].step == 1  # the last good state


def test_the_loop_trains_on_batches_sampled_from_a_live_replay_server(tmp_path):
    config = config_for(tmp_path, "replay.samples_per_insert=none")
    spec = environments.environment_spec(config.environment)
    server = reverb.Server([replay.make_online_table(config.replay, spec)], port=None)
    address = f"localhost:{server.port}"
    env = environments.make_environment(config.environment)
    writer = replay.make_writer(reverb.Client(address), config.replay, replay.ONLINE_TABLE)
    try:
        episodes = EpisodeRunner(env, uniform_random_policy(env.action_spec(), seed=0), [writer]).run(1)
        writer.flush()
        assert [episode.steps for episode in episodes] == [1000]
        assert reverb.Client(address).server_info()[replay.ONLINE_TABLE].current_size == 1000  # one item per step

        learner = agents.Learner(config.learner, spec.observations.shape, spec.actions.shape[0])
        stop = threading.Event()
        loop = LearnerLoop(config, learner, initial_state(config, learner),
                           replay_batches(config, replay.layout_of(spec), address, learner, 0, stop))
        while loop.steps < 30:
            loop.step()
        stop.set()
        assert loop.settle() == 30 and loop.published[0] == 30
        assert np.isfinite(loop.metrics["critic_loss"]) and loop.metrics["nonfinite_updates"] == 0.0
        loop.close()
        assert checkpoints.list_steps(config.run_dir) == [20, 30]
    finally:
        writer.close()
        env.close()
        server.stop()


def test_a_resumed_loop_goes_on_with_the_rae_anneal_where_its_checkpoint_was(tmp_path):
    """A resumed run's learner starts at its checkpoint's step: the RaE items of each batch (and the
    logged figure) follow the anneal from there, not from its start. The share: 0.5 -> 0 over
    100 learner steps, batch 32 (16 RaE items at step 0); resumed at step 50."""
    import dataclasses

    from launch.config import RaEConfig
    from launch.loops.learner import offline_items

    config = config_for(tmp_path)
    rae = RaEConfig(runs=("earlier",), ratio=0.5, final_ratio=0.0, anneal_learner_steps=100, offline_items=1000)
    config = dataclasses.replace(config, rae=rae)
    learner = learner_for(config.learner)
    state = initial_state(config, learner)
    resumed = state.replace(steps=jax.numpy.asarray(50, state.steps.dtype))  # as restored from a checkpoint
    rng = np.random.default_rng(4)
    loop = LearnerLoop(config, learner, resumed, ListBatches([random_batch(rng, batch_size=32) for _ in range(60)]))
    share = lambda step: int(round(16 * (1 - min(step, 100) / 100)))  # noqa: E731
    # The resumed loop's first batch holds what the anneal had reached, not the 16 it started at.
    assert [offline_items(config, loop.first_step, index) for index in (0, 30, 50, 59)] == [8, 3, 0, 0]
    while loop.step():
        pass
    rows = metrics.read_rows(metrics.csv_path(config.run_dir, "learner"))
    # Each row: the items in the batch of its update, which came from learner step - 1.
    assert [row["learner_step"] for row in rows] == list(range(55, 111, 5))
    assert [row["rae_offline_items"] for row in rows] == [share(row["learner_step"] - 1) for row in rows]
    loop.close()


def stack(batches):
    return jax.tree_util.tree_map(lambda *parts: np.stack(parts), *batches)


def test_k_updates_a_call_make_the_parameters_of_k_single_updates_and_everything_else_falls_between_calls(tmp_path):
    """learner_steps_per_call=4: six calls on stacked batches make the state of 24 single updates
    on the same batches (scan and loop round alike to ~1e-6). Publishing (every 5) and the
    checkpoint (every 20) come at the first call boundary at or past their step, and a stop
    asked during a call takes effect after it."""
    config = config_for(tmp_path, "experiment.learner_steps_per_call=4")
    learner = learner_for(config.learner)
    rng = np.random.default_rng(5)
    batches = [jax.tree_util.tree_map(np.asarray, random_batch(rng, batch_size=32)) for _ in range(28)]
    expected = initial_state(config, learner)
    for batch in batches[:24]:
        expected, _ = learner.update(expected, batch)
    expected = jax.device_get(expected)

    counts = Counts()
    loop = LearnerLoop(config, learner, initial_state(config, learner),
                       ListBatches([stack(batches[i:i + 4]) for i in range(0, 28, 4)]), counter=Counter(), counts=counts)
    calls = []
    loop.run(lambda: calls.append(loop.steps) or len(calls) > 6)  # asked to stop after the 6th call
    assert loop.steps == 24 and calls == [0, 4, 8, 12, 16, 20, 24]
    for got, want in zip(leaves(loop.state), leaves(expected), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert counts.steps == [8, 12, 16, 20] and loop.published[0] == 20
    assert [row["learner_step"] for row in metrics.read_rows(metrics.csv_path(config.run_dir, "learner"))] == [8, 12, 16, 20]
    assert checkpoints.list_steps(config.run_dir) == [20]
    assert loop.settle() == 24
    loop.close()
    assert checkpoints.list_steps(config.run_dir) == [20, 24]


def test_non_finite_updates_inside_calls_count_in_a_row_across_them(tmp_path):
    """k = 2, at most 3 skipped in a row: [good, bad] [bad, good] is 2 in a row and goes on;
    [bad, bad] [bad, good] makes 3 in a row across the call boundary: a RunError."""
    from test_nonfinite_updates import corrupt

    config = config_for(tmp_path, "experiment.learner_steps_per_call=2", "experiment.max_nonfinite_updates_in_a_row=3",
                        "experiment.learner_publish_period=2")
    learner = learner_for(config.learner)
    rng = np.random.default_rng(6)
    good = lambda: random_batch(rng, batch_size=32)  # noqa: E731
    bad = lambda: corrupt(random_batch(rng, batch_size=32), "reward", 0, np.nan)  # noqa: E731
    loop = LearnerLoop(config, learner, initial_state(config, learner),
                       ListBatches([stack([good(), bad()]), stack([bad(), good()]), stack([bad(), bad()]),
                                    stack([bad(), good()])]))
    assert loop.step() and loop.step() and loop.step()
    assert loop.skipped_updates == 4 and loop.steps == 2  # read at each publication: 2 in a row at most
    with pytest.raises(RunError, match="3 learner updates in a row had a NaN or inf"):
        loop.step()
    assert loop.settle() == int(jax.device_get(loop.state.steps)) == 3  # the good ones applied, the last too
    loop.close()


def test_raes_share_is_exact_in_each_of_a_calls_batches(tmp_path):
    """k = 4, batch 8, RaE's share annealed 0.5 -> 0 over 40 learner steps: every one of the k
    batches of a call holds exactly the offline items of its own update."""
    import dataclasses

    from launch.config import RaEConfig
    from launch.loops.learner import offline_items
    from test_offline import _mixing_server

    server, replay_config, offline_observations = _mixing_server(tmp_path / "data", batch_size=8)
    config = dataclasses.replace(
        config_for(tmp_path / "run", "experiment.learner_steps_per_call=4"), replay=replay_config,
        rae=RaEConfig(runs=("a",), ratio=0.5, final_ratio=0.0, anneal_learner_steps=40, offline_items=1000))
    learner = agents.Learner(config.learner, 5, 1)
    stop = threading.Event()
    batches = replay_batches(config, replay.TransitionLayout(observation_dim=5, action_dim=1), f"localhost:{server.port}",
                             learner, 0, stop)
    try:
        counts = []
        for _ in range(15):
            call = jax.device_get(batches.next(timeout=60.0))
            assert call.observation.shape == (4, 8, 5)
            counts += [sum(tuple(o) in offline_observations for o in batch) for batch in call.observation]
        assert counts == [offline_items(config, 0, index) for index in range(60)]
        assert counts[:4] == [4, 4, 4, 4] and counts[-1] == 0
    finally:
        stop.set()
        batches.close()
        server.stop()
