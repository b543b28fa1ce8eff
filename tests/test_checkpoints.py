"""Learner checkpoints (launch.rundir.checkpoints) with real learner states and orbax on disk."""

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

import agents
from launch.rundir import checkpoints
from tests.test_learner import learner_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBS, ACT, BATCH = 5, 2, 16
SMALL = dict(policy_layer_sizes=(16, 16), critic_layer_sizes=(16, 16), num_samples=4)


def make_learner(agent="mog"):
    return learner_for(agents.make_config(agent, **SMALL), OBS, ACT)


def batch(seed):
    rng = np.random.default_rng(seed)
    return agents.Transition(
        observation=rng.normal(size=(BATCH, OBS)).astype(np.float32),
        action=rng.uniform(-1, 1, size=(BATCH, ACT)).astype(np.float32),
        reward=rng.normal(size=BATCH).astype(np.float32),
        discount=np.full(BATCH, 0.99, np.float32),
        next_observation=rng.normal(size=(BATCH, OBS)).astype(np.float32),
    )


def trained_states(learner, count):
    """Host copies of the state after 1, 2, ... `count` updates."""
    state, states = learner.init(jax.random.PRNGKey(0)), []
    for step in range(count):
        state, _ = learner.update(state, batch(step))
        states.append(jax.device_get(state))
    return states


def leaves_equal(a, b):
    flat_a, flat_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(flat_a) == len(flat_b) and all(np.array_equal(x, y) for x, y in zip(flat_a, flat_b))


def data_files(directory):
    """The array data files of a checkpoint (orbax OCDBT's `d/` files)."""
    files = [path for path in glob.glob(os.path.join(directory, "**", "d", "*"), recursive=True) if os.path.isfile(path)]
    assert files, f"no array data files under {directory}"
    return files


def save_all(run_dir, states, keep=3):
    writer = checkpoints.CheckpointWriter(str(run_dir), keep=keep, static_meta={"agent": "mog"})
    for i, state in enumerate(states):
        writer.save(state, {"actor_steps": 100.0 * (i + 1)}, "periodic")
    writer.close()


def test_the_newest_k_are_kept_and_the_whole_state_comes_back_exactly(tmp_path):
    learner = make_learner()
    states = trained_states(learner, 4)
    save_all(tmp_path, states, keep=2)
    assert checkpoints.list_steps(str(tmp_path)) == [3, 4]
    checkpoint, damaged = checkpoints.load_latest(str(tmp_path))
    assert damaged == [] and checkpoint.step == 4 and checkpoint.meta["counts"] == {"actor_steps": 400.0}
    restored = checkpoints.restore_state(learner.init(jax.random.PRNGKey(9)), checkpoint)
    assert type(restored) is agents.LearnerState and int(restored.steps) == 4
    # Params, targets, Adam moments, duals, step and RNG key: every array, bit for bit.
    assert leaves_equal(restored, states[-1])
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(states[-1])
    # The restored state trains on exactly as the original does.
    continued, _ = learner.update(jax.device_put(restored, learner.replicated), batch(99))
    original, _ = learner.update(jax.device_put(states[-1], learner.replicated), batch(99))
    assert leaves_equal(jax.device_get(continued), jax.device_get(original))


def test_saving_the_same_step_twice_writes_one_checkpoint(tmp_path):
    state = trained_states(make_learner(), 1)[0]
    writer = checkpoints.CheckpointWriter(str(tmp_path))
    assert writer.save(state, {}, "periodic") is not None
    assert writer.save(state, {}, "final") is None  # a stop right after a periodic save
    writer.close()
    assert checkpoints.list_steps(str(tmp_path)) == [1]


@pytest.mark.parametrize("damage", ["truncate", "zero_bytes"])
def test_a_damaged_checkpoint_is_skipped_with_a_warning(tmp_path, damage):
    states = trained_states(make_learner(), 2)
    save_all(tmp_path, states)
    newest = os.path.join(str(tmp_path), "checkpoints", "2")
    # Every array data file: which of orbax's OCDBT files a restore reads varies with how the
    # save's writes were batched (seen: damaging only the largest left a loadable checkpoint).
    for path in data_files(newest):
        size = os.path.getsize(path)
        with open(path, "r+b") as file:
            if damage == "truncate":
                file.truncate(size // 2)
            else:  # same size, different bytes: only the digest can tell
                file.seek(size // 3)
                file.write(bytes(min(64, size - size // 3)))
    with pytest.warns(checkpoints.CheckpointWarning, match="Skipping checkpoint 2"):
        checkpoint, damaged = checkpoints.load_latest(str(tmp_path))
    assert checkpoint.step == 1 and damaged == [newest]
    assert leaves_equal(checkpoint.state, checkpoints.state_dict(states[0]))
    with pytest.raises(checkpoints.CheckpointError, match="cannot be read|damaged"):
        checkpoints.load(newest)


def test_no_loadable_checkpoint_is_an_error_that_says_so(tmp_path):
    with pytest.raises(checkpoints.CheckpointError, match="has no checkpoints"):
        checkpoints.load_latest(str(tmp_path))
    save_all(tmp_path, trained_states(make_learner(), 1))
    for path in data_files(os.path.join(str(tmp_path), "checkpoints", "1")):
        os.remove(path)
    with pytest.warns(checkpoints.CheckpointWarning):
        with pytest.raises(checkpoints.CheckpointError, match="None of the checkpoints"):
            checkpoints.load_latest(str(tmp_path))
    with pytest.raises(checkpoints.CheckpointError, match="no checkpoint at learner step 7"):
        checkpoints.load_latest(str(tmp_path), step=7)


def test_a_save_killed_midway_leaves_only_complete_checkpoints(tmp_path):
    """SIGKILL a process that saves large states back to back; every checkpoint left loads."""
    script = textwrap.dedent("""
        import jax, sys
        import agents
        from launch.rundir import checkpoints
        learner = agents.Learner(agents.make_config("mog"), 24, 6)  # Acme sizes: ~9 MB a checkpoint
        state = jax.device_get(learner.init(jax.random.PRNGKey(0)))
        writer = checkpoints.CheckpointWriter(sys.argv[1], keep=1000)
        step = 0
        while True:
            step += 1
            writer.save(state.replace(steps=state.steps + step), {}, "periodic")
            print(step, flush=True)
    """)
    saver = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    for _ in range(3):  # a few complete saves, then kill it in the middle of the following ones
        saver.stdout.readline()
    time.sleep(0.137)
    saver.send_signal(signal.SIGKILL)
    saver.wait(timeout=30)
    steps = checkpoints.list_steps(str(tmp_path))
    assert len(steps) >= 3
    for step in steps:  # load() raises on anything incomplete
        assert checkpoints.load(os.path.join(str(tmp_path), "checkpoints", str(step))).step == step


def test_init_from_takes_the_networks_and_nothing_else(tmp_path):
    learner = make_learner()
    source = trained_states(learner, 3)[-1]
    save_all(tmp_path, [source])
    checkpoint, _ = checkpoints.load_latest(str(tmp_path))
    fresh = learner.init(jax.random.PRNGKey(5))
    for parts, taken in (("policy", ["policy_params"]), ("critic", ["critic_params"]),
                         ("all", ["policy_params", "critic_params"])):
        state = checkpoints.init_from(fresh, checkpoint, parts)
        for key in ("policy_params", "critic_params"):
            expected = getattr(source if key in taken else fresh, key)
            assert leaves_equal(getattr(state, key), expected)
            assert leaves_equal(getattr(state, "target_" + key), expected)  # targets start at the loaded weights
        # Optimizer states, duals, step counter and RNG stay fresh.
        assert int(state.steps) == 0 and leaves_equal(state.key, fresh.key)
        for key in ("policy_opt_state", "critic_opt_state", "dual_params", "dual_opt_state"):
            assert leaves_equal(getattr(state, key), getattr(fresh, key))


def test_init_from_a_mismatched_network_names_each_layer_and_both_shapes(tmp_path):
    save_all(tmp_path, trained_states(make_learner("mog"), 1))  # 5 Gaussians: head of 15 outputs
    checkpoint, _ = checkpoints.load_latest(str(tmp_path))
    scalar = make_learner("mpo").init(jax.random.PRNGKey(0))
    checkpoints.init_from(scalar, checkpoint, "policy")  # the policy fits
    with pytest.raises(checkpoints.CheckpointError) as error:
        checkpoints.init_from(scalar, checkpoint, "critic")
    message = str(error.value)
    assert "critic_params/params/head/kernel: checkpoint (16, 15) vs this run (16, 1)" in message
    assert "critic_params/params/head/bias: checkpoint (15,) vs this run (1,)" in message
    wider = agents.Learner(agents.make_config("mog", **{**SMALL, "policy_layer_sizes": (32, 16)}), OBS, ACT)
    with pytest.raises(checkpoints.CheckpointError, match=r"Dense_0/kernel: checkpoint \(5, 16\) vs this run \(5, 32\)"):
        checkpoints.init_from(wider.init(jax.random.PRNGKey(0)), checkpoint, "all")


@pytest.mark.parametrize("spec, expected", [
    ("runs/a", ("runs/a", "all")), ("runs/a:policy", ("runs/a", "policy")), ("runs/a:critic", ("runs/a", "critic")),
    ("/x/c:d/run:all", ("/x/c:d/run", "all")), ("/x/c:d/run", ("/x/c:d/run", "all")),
])
def test_init_from_spec_parsing(spec, expected):
    assert checkpoints.parse_init_spec(spec) == expected


def test_a_checkpoint_from_two_devices_loads_on_one(tmp_path):
    """Saved arrays carry no device layout: a state replicated over 2 devices (as on a
    multi-GPU learner) loads in a process with 1 device and equals the original."""
    script = textwrap.dedent(f"""
        import jax, numpy as np, sys
        import agents
        from launch.rundir import checkpoints
        assert len(jax.devices()) == 2
        learner = agents.Learner(agents.make_config("mog", policy_layer_sizes=(16, 16), critic_layer_sizes=(16, 16),
                                 num_samples=4), {OBS}, {ACT})
        state = learner.init(jax.random.PRNGKey(3))
        writer = checkpoints.CheckpointWriter(sys.argv[1])
        writer.save(state, {{}}, "final")
        writer.close()
        np.save(sys.argv[1] + "/kernel.npy", np.asarray(state.critic_params["params"]["head"]["kernel"]))
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, env=env, check=True, timeout=120)
    checkpoint, _ = checkpoints.load_latest(str(tmp_path))
    learner = make_learner()
    state = checkpoints.restore_state(learner.init(jax.random.PRNGKey(0)), checkpoint)
    np.testing.assert_array_equal(state.critic_params["params"]["head"]["kernel"], np.load(tmp_path / "kernel.npy"))
    assert int(state.steps) == 0
