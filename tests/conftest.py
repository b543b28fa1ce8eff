"""What the test modules share: one finished run, made once (runs cost the suite most of its time),
and one process with two JAX devices for the data-parallel checks.

No persistent JAX compilation cache: with jax 0.4.30 on CPU an executable read back from it
honoured buffer donation where a fresh compile does not, and host copies taken with
jax.device_get (which alias device memory on CPU) changed under later updates (measured:
experiments/results/README.md, "house")."""

import os
import subprocess
import sys

import pytest

from test_program import run_to_end, train_command

CHECKPOINT_EVERY = "--set=experiment.checkpoint_every_learner_steps=100"


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """A short finished run of the debug preset (threads: quicker to start), a checkpoint every 100
    learner steps. Read, evaluated, resumed from and replayed by the tests; never written to."""
    run_dir = str(tmp_path_factory.mktemp("finished") / "run")
    run_to_end(train_command(run_dir, "--max_env_steps=4000", "--launch_type=local_mt", CHECKPOINT_EVERY))
    return run_dir


@pytest.fixture(scope="session")
def two_device_run():
    """Runs scripts in one process whose JAX has two CPU devices (data parallelism on a machine
    without accelerators): `run(script) -> its stdout`. The scripts given during the session run
    together, once, when the first result is asked for; a failure fails each test that asks."""
    from test_learner import TWO_DEVICE_SCRIPT as LEARNER
    from test_nonfinite_updates import TWO_DEVICE_SCRIPT as NONFINITE

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", LEARNER + "\n" + NONFINITE], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
