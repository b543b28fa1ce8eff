"""A full disk while a run writes experience or checkpoints, on a real small tmpfs the test
mounts: a RunError that says so, and everything written before still loads."""

import errno
import glob
import os
import subprocess

import dm_env
import jax
import numpy as np
import pytest

from launch.faults import disk_full
from launch.rundir import checkpoints
from launch.faults import RunError
from replay import experience
from test_checkpoints import leaves_equal, make_learner, trained_states


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a directory on a tmpfs of that size; unmounted after the test."""
    directory = str(tmp_path / "disk")
    os.makedirs(directory)

    def mount(size: str) -> str:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", directory],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
        return directory

    yield mount
    if os.path.ismount(directory):
        subprocess.run(["umount", directory], check=True)
        assert not os.path.ismount(directory)


def grow(directory: str, size: str) -> None:
    """Frees space the way a user would, by giving the filesystem more (keeps its files)."""
    subprocess.run(["mount", "-o", f"remount,size={size}", directory], check=True)


def fill(path: str) -> None:
    """Writes `path` until the filesystem has no byte left: a disk full again, whatever a failed
    write left free (checkpoint sizes vary a little, and orbax removes its partial files)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (65536, 4096, 1):
            try:
                while True:
                    os.write(descriptor, b"\0" * chunk)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
    finally:
        os.close(descriptor)


def test_disk_full_is_told_apart_through_the_cause_chain():
    assert disk_full.disk_full_code(OSError(errno.ENOSPC, "No space left on device")) == errno.ENOSPC
    assert disk_full.disk_full_code(OSError(errno.EDQUOT, "Disk quota exceeded")) == errno.EDQUOT
    # Tensorstore (orbax's arrays) names the OS error only in its message.
    assert disk_full.disk_full_code(ValueError("RESOURCE_EXHAUSTED: ... [OS error 28: ENOSPC No space left on device]")) \
        == errno.ENOSPC
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as cause:
            raise RuntimeError("save failed") from cause
    except RuntimeError as wrapped:
        assert disk_full.disk_full_code(wrapped) == errno.ENOSPC
    assert disk_full.disk_full_code(OSError(errno.EACCES, "Permission denied")) is None
    assert disk_full.disk_full_code(ValueError("bad shape")) is None
    assert disk_full.run_error(ValueError("bad shape"), "x", "/", "y", "/run") is None


OBS, ACT, EPISODE = 64, 4, 30


def steps(rng):
    """An endless stream of (action, timestep) pairs in episodes of EPISODE timesteps."""
    while True:
        timesteps = [dm_env.restart(rng.normal(size=OBS).astype(np.float32))]
        for t in range(1, EPISODE):
            observation = rng.normal(size=OBS).astype(np.float32)
            reward = np.float32(rng.normal())
            timesteps.append(dm_env.termination(reward, observation) if t == EPISODE - 1
                             else dm_env.transition(reward, observation, np.float32(0.99)))
        for timestep in timesteps:
            yield rng.uniform(-1, 1, size=ACT).astype(np.float32), timestep


def rows(timesteps_and_actions):
    """The columns a recording of these timesteps holds, worked out here from the inputs."""
    return {
        "step_type": np.array([int(ts.step_type) for ts, _ in timesteps_and_actions], np.uint8),
        "reward": np.array([0.0 if ts.first() else ts.reward for ts, _ in timesteps_and_actions], np.float32),
        "discount": np.array([1.0 if ts.first() else ts.discount for ts, _ in timesteps_and_actions], np.float32),
        "observation": np.stack([ts.observation for ts, _ in timesteps_and_actions]),
        "action": np.stack([np.zeros(ACT, np.float32) if ts.last() else a for ts, a in timesteps_and_actions]),
    }


def record_until_full(recorder, stream, added):
    """Feeds the recorder until it raises; `added` gets each (timestep, action taken) row."""
    with pytest.raises(experience.ChunkWriteError) as raised:
        _, first = next(stream)
        recorder.add_first(first)
        pending = first
        for _ in range(100_000):
            action, timestep = next(stream)
            if pending is None:  # the previous episode ended: this is a FIRST
                recorder.add_first(timestep)
                pending = timestep
                continue
            recorder.add(action, timestep)
            added.append((pending, action))
            if timestep.last():
                added.append((timestep, None))
                pending = None
            else:
                pending = timestep
    return raised.value


def test_a_full_disk_ends_recording_with_a_clear_error_and_the_chunks_before_it_load(small_disk):
    run_dir = small_disk("256k")
    recorder = experience.ExperienceRecorder(run_dir, actor_id=0, chunk_steps=50, flush_every_s=1e9)
    added = []
    error = record_until_full(recorder, steps(np.random.default_rng(0)), added)
    directory = os.path.join(run_dir, "experience", "actor_0")
    chunks = sorted(glob.glob(os.path.join(directory, "*.npz")))
    message = str(disk_full.recording_error(error, run_dir))  # what the actor ends the run with
    assert f"Writing the experience chunk {directory}/{len(chunks):08d}.npz failed: No space left on device" in message
    assert "free of 256.0 KiB" in message  # the tmpfs's size, from statvfs
    assert f"The {len(chunks)} chunks before it in {directory} are whole and load" in message
    assert f"then resume with --resume {run_dir}." in message
    assert error.errno == errno.ENOSPC and isinstance(error.__cause__, OSError)
    # The partial chunk is gone, not left holding space.
    assert sorted(os.listdir(directory)) == [os.path.basename(path) for path in chunks]
    # 50 or 51 rows a chunk (an action and a LAST arrive together); ~16 KiB each on a 256 KiB disk.
    assert 8 <= len(chunks) <= 20
    lengths = [len(experience.read_chunk(path)["step_type"]) for path in chunks]
    assert all(length in (50, 51) for length in lengths)
    written = sum(lengths)
    # Every step of every chunk written comes back, equal to what was added, in order.
    skipped = []
    episodes = list(experience.read_episodes(directory, skipped))
    assert skipped == [] and len(episodes) == -(-written // EPISODE)
    expected = rows([(ts, a) for ts, a in added[:written]])
    for column in experience.COLUMNS:
        np.testing.assert_array_equal(np.concatenate([e[column] for e in episodes]), expected[column])
    # Only the failed chunk's rows were lost: the steps added after the last whole chunk.
    assert 0 < len(added) - written <= 51

    # With space again, a resumed actor's recorder goes on after the chunks there.
    grow(run_dir, "1m")
    resumed = experience.ExperienceRecorder(run_dir, actor_id=0, chunk_steps=50, flush_every_s=1e9)
    more = []
    stream = steps(np.random.default_rng(1))
    _, first = next(stream)
    resumed.add_first(first)
    for _ in range(EPISODE - 1):
        action, timestep = next(stream)
        resumed.add(action, timestep)
        more.append((first, action))
        first = timestep
    more.append((first, None))
    resumed.close()
    episodes = list(experience.read_episodes(directory))
    expected = rows(added[:written] + more)
    for column in experience.COLUMNS:
        np.testing.assert_array_equal(np.concatenate([e[column] for e in episodes]), expected[column])


def test_a_full_disk_ends_checkpointing_with_a_clear_error_and_the_last_good_one_loads(small_disk):
    learner = make_learner()
    states = trained_states(learner, 6)  # steps 1..6
    run_dir = small_disk("256k")  # ~100 KiB a checkpoint on a tmpfs: the third does not fit
    writer = checkpoints.CheckpointWriter(run_dir, keep=2)
    saved = []
    with pytest.raises(RunError) as raised:
        for state in states:
            writer.save(state, {"actor_steps": 100.0 * (len(saved) + 1)}, "periodic")
            saved.append(state)
    good = len(saved)  # the step of the last good checkpoint
    assert 1 <= good < len(states)
    directory = os.path.join(run_dir, "checkpoints")
    message = str(raised.value)
    assert f"Saving the learner checkpoint at step {good + 1} into {directory} failed: No space left on device" in message
    assert "free of 256.0 KiB" in message  # the tmpfs size, from statvfs
    expected_steps = list(range(max(1, good - 1), good + 1))  # keep=2: the failed save deleted none
    assert f"the checkpoints already there ({expected_steps}) are whole and load" in message
    assert f"then resume with --resume {run_dir}." in message
    # No partial directory of orbax's is left; only the finished checkpoints.
    assert sorted(os.listdir(directory)) == sorted(str(step) for step in expected_steps)
    assert checkpoints.list_steps(run_dir) == expected_steps

    # The stop path: the final save on the still-full disk says the same, and closing works.
    filler = os.path.join(run_dir, "filler")
    fill(filler)  # what the failed save left free was once enough for the retry (a fresh-clone run)
    with pytest.raises(RunError, match=f"at step {good + 1} into {directory} failed: No space left on device"):
        writer.save(states[good], {}, "final")
    writer.close()
    assert sorted(os.listdir(directory)) == sorted(str(step) for step in expected_steps)
    os.remove(filler)

    checkpoint, damaged = checkpoints.load_latest(run_dir)
    assert damaged == [] and checkpoint.step == good and checkpoint.meta["counts"] == {"actor_steps": 100.0 * good}
    assert leaves_equal(checkpoint.state, checkpoints.state_dict(saved[-1]))
    restored = checkpoints.restore_state(learner.init(jax.random.PRNGKey(9)), checkpoint)
    assert leaves_equal(restored, saved[-1])

    # With space again, a resumed run's writer saves the next step, and that one loads.
    grow(run_dir, "1m")
    resumed = checkpoints.CheckpointWriter(run_dir, keep=2)
    assert resumed.last_step == good
    resumed.save(states[good], {}, "periodic")
    resumed.close()
    checkpoint, damaged = checkpoints.load_latest(run_dir)
    assert damaged == [] and checkpoint.step == good + 1
    assert leaves_equal(checkpoint.state, checkpoints.state_dict(states[good]))
