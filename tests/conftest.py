"""What several test modules share: one finished run, made once (runs cost the suite most of its time)."""

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
