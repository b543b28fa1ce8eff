"""Non-finite learner updates: skipped in the jitted step, counted, and fatal K in a row."""

import os
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents
from agents import learning
from experiments.configs import make_experiment_config
from launch.faults import RunError
from launch.faults.nonfinite import NonFiniteGuard
from tests.test_learner import SMALL, learner_for, leaves, random_batch


def make_learner(agent="mpo"):
    return learner_for(agents.make_config(agent, **SMALL))


def trained_state(learner, rng, updates=2):
    """A state past its first updates (non-zero Adam moments, targets apart from the online nets)."""
    state = learner.init(jax.random.PRNGKey(0))
    for _ in range(updates):
        state, _ = learner.update(state, random_batch(rng))
    return state


def corrupt(batch, field, index, value):
    array = np.array(getattr(batch, field))
    array[index] = value
    return batch.replace(**{field: array})


def assert_same_state(a, b):
    for x, y in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("agent", ["mpo", "dmpo", "mog"])
def test_a_nan_reward_skips_the_update_and_the_next_finite_batch_updates_normally(agent):
    learner = make_learner(agent)
    rng = np.random.default_rng(0)
    state = trained_state(learner, rng)
    before = jax.device_get(state)  # the update donates `state`
    good = random_batch(rng)

    state, metrics = learner.update(state, corrupt(random_batch(rng), "reward", 3, np.nan))
    assert float(metrics["nonfinite_updates"]) == 1.0
    assert not np.isfinite(float(metrics["critic_loss"]))  # the batch did poison the loss
    assert_same_state(state, before)  # params, targets, duals, optimizer states, step, rng key
    assert int(state.steps) == 2

    state, metrics = learner.update(state, good)
    assert float(metrics["nonfinite_updates"]) == 0.0
    assert int(state.steps) == 3
    # Exactly the update the last good state makes on its own: the skip left no trace (not
    # even a used rng key).
    reference, reference_metrics = learner.update(jax.device_put(before, learner.replicated), good)
    assert_same_state(state, reference)
    assert {k: float(v) for k, v in metrics.items()} == {k: float(v) for k, v in reference_metrics.items()}


@pytest.mark.parametrize("field, index, value", [
    ("observation", (0, 1), np.inf),
    ("next_observation", (5, 0), -np.inf),
    ("reward", 7, np.inf),
    ("action", (2, 1), np.nan),
    ("discount", 0, np.nan),
])
def test_any_non_finite_input_skips_the_update(field, index, value):
    learner = make_learner("mpo")
    rng = np.random.default_rng(1)
    state = trained_state(learner, rng)
    before = jax.device_get(state)
    state, metrics = learner.update(state, corrupt(random_batch(rng), field, index, value))
    assert float(metrics["nonfinite_updates"]) == 1.0
    assert_same_state(state, before)


def test_update_many_guards_each_update_and_counts_the_skipped():
    learner = make_learner("dmpo")
    rng = np.random.default_rng(2)
    state = learner.init(jax.random.PRNGKey(0))
    initial = jax.device_get(state)
    batches = [random_batch(rng) for _ in range(4)]
    batches[1] = corrupt(batches[1], "reward", 0, np.nan)
    batches[3] = corrupt(batches[3], "observation", (1, 1), np.inf)
    stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *batches)

    state, metrics = learner.update_many(state, stacked)
    assert float(metrics["nonfinite_updates"]) == 2.0
    np.testing.assert_array_equal(metrics["nonfinite_each"], [0.0, 1.0, 0.0, 1.0])  # which, in order
    assert int(state.steps) == 2
    # The same as the two good batches one at a time (scan and loop round alike to ~1e-6).
    expected = jax.device_put(initial, learner.replicated)
    for batch in (batches[0], batches[2]):
        expected, _ = learner.update(expected, batch)
    for a, b in zip(leaves(state), leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("choose", [learning._cond, learning._select])
def test_both_ways_of_keeping_a_state_agree(choose):
    """The step keeps or drops the update by a conditional on CPU and a select elsewhere
    (agents.learning._choose); the tests above run the conditional only."""
    learner = make_learner("mpo")
    old, new = learner.init(jax.random.PRNGKey(0)), learner.init(jax.random.PRNGKey(1))
    assert sum(not np.array_equal(a, b) for a, b in zip(leaves(old), leaves(new))) > 10  # other weights, other key
    for keep_new, expected in ((True, new), (False, old)):
        assert_same_state(jax.jit(choose)(jnp.array(keep_new), new, old), expected)


def test_guard_counts_and_stops_after_exactly_k_in_a_row(tmp_path):
    guard = NonFiniteGuard(max_in_a_row=3, run_dir=str(tmp_path), step=100)
    # Two runs of two, each ended by an applied update: counted, not fatal.
    for flag in [0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0]:
        guard.record(np.float32(flag))
    assert guard.unread == 7
    assert guard.read() == 103  # 100 + the 3 applied
    assert (guard.skipped, guard.in_a_row, guard.unread, guard.tripped_at) == (4, 0, 0, None)
    guard.check()

    for flag in [1.0, 1.0]:
        guard.record(np.float32(flag))
    assert guard.read() == 103 and (guard.skipped, guard.in_a_row) == (6, 2)
    guard.check()  # two in a row: not yet
    guard.record(np.float32(1.0))  # the third in a row, across two reads
    assert guard.read() == 103 and (guard.skipped, guard.in_a_row, guard.tripped_at) == (7, 3, 103)
    with pytest.raises(RunError) as raised:
        guard.check()
    message = str(raised.value)
    assert message.startswith("3 learner updates in a row had a NaN or inf loss or gradients (at learner step 103)")
    assert os.path.join(str(tmp_path), "metrics", "learner.csv") in message
    assert "skipped_updates; 7 in this launch" in message
    assert "--set=experiment.max_nonfinite_updates_in_a_row=N" in message and "learning_rate" in message


def test_guard_finds_a_run_that_ended_before_the_read(tmp_path):
    """Flags are read every publish period, not every update: a run of K followed by applied
    updates in the same read is still caught, at the step it happened, and every applied
    update is still counted (the node's step stays the state's)."""
    guard = NonFiniteGuard(max_in_a_row=2, run_dir=str(tmp_path), step=10)
    for flag in [0.0, 1.0, 1.0, 0.0, 0.0]:
        guard.record(np.float32(flag))
    assert guard.read() == 13
    assert (guard.skipped, guard.in_a_row, guard.tripped_at) == (2, 0, 11)
    with pytest.raises(RunError, match=r"^2 learner updates in a row .* \(at learner step 11\)"):
        guard.check()


def test_guard_with_k_one(tmp_path):
    guard = NonFiniteGuard(max_in_a_row=1, run_dir=str(tmp_path), step=0)
    guard.record(np.float32(0.0))
    assert guard.read() == 1
    guard.check()
    guard.record(np.float32(1.0))
    assert guard.read() == 1
    with pytest.raises(RunError, match="^1 learner updates in a row"):
        guard.check()
    with pytest.raises(ValueError, match="max_in_a_row must be >= 1"):
        NonFiniteGuard(max_in_a_row=0, run_dir=str(tmp_path), step=0)


def test_guard_on_a_real_learner_keeps_the_node_step_equal_to_the_state_step(tmp_path):
    """As the node drives it: the flags stay on the device until read."""
    learner = make_learner("mpo")
    rng = np.random.default_rng(3)
    state = learner.init(jax.random.PRNGKey(0))
    guard = NonFiniteGuard(max_in_a_row=2, run_dir=str(tmp_path), step=0)
    nan_batch = corrupt(random_batch(rng), "reward", 0, np.nan)
    for batch in [random_batch(rng), nan_batch, random_batch(rng), nan_batch]:
        state, metrics = learner.update(state, batch)
        guard.record(metrics["nonfinite_updates"])
    assert guard.read() == int(state.steps) == 2
    assert (guard.skipped, guard.in_a_row) == (2, 1)
    guard.check()
    state, metrics = learner.update(state, nan_batch)
    guard.record(metrics["nonfinite_updates"])
    assert guard.read() == int(state.steps) == 2
    with pytest.raises(RunError, match=r"at learner step 2\)"):
        guard.check()


def test_the_limit_is_an_experiment_setting(tmp_path):
    make = lambda *overrides: make_experiment_config(  # noqa: E731
        "mpo", "cartpole:swingup", str(tmp_path), preset="debug", overrides=overrides)
    assert make().max_nonfinite_updates_in_a_row == 10
    assert make("experiment.max_nonfinite_updates_in_a_row=1").max_nonfinite_updates_in_a_row == 1
    with pytest.raises(ValueError, match=r"ExperimentConfig.max_nonfinite_updates_in_a_row must be >= 1, got 0"):
        make("experiment.max_nonfinite_updates_in_a_row=0")


TWO_DEVICE_SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np, agents
    from tests.test_learner import random_batch, SMALL
    from tests.test_nonfinite_updates import corrupt, trained_state
    assert jax.device_count() == 2, jax.devices()
    learner = agents.Learner(agents.make_config("mpo", **SMALL), observation_shape=5, action_dim=2)
    rng = np.random.default_rng(0)
    state = trained_state(learner, rng)
    before = [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(state))]
    # Row 40 of 64 lies in the second device's half of the batch only.
    state, metrics = learner.update(state, corrupt(random_batch(rng, batch_size=64), "reward", 40, np.nan))
    assert float(metrics["nonfinite_updates"]) == 1.0
    for leaf, old in zip(jax.tree_util.tree_leaves(state), before):
        shards = leaf.addressable_shards
        assert len(shards) == 2
        for shard in shards:  # each device kept its own copy of the last good state
            np.testing.assert_array_equal(np.asarray(shard.data), old)
    state, metrics = learner.update(state, random_batch(rng, batch_size=64))
    assert float(metrics["nonfinite_updates"]) == 0.0 and int(state.steps) == 3
    print("both devices skipped")
    """
)


@pytest.mark.xdist_group("two_devices")  # one process with two devices serves both (conftest)
def test_data_parallel_devices_skip_together(two_device_run):
    assert "both devices skipped" in two_device_run
