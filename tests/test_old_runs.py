"""A run made before launch/ took its folders (tests/data/run_made_before_the_layout) still
evaluates, feeds RaE and resumes: what users' earlier runs need of every later Relay.

The fixture was made at 8035c77 with `python -m experiments.train --preset=debug --agent=mpo
--env=cartpole:swingup --num_actors=1 --max_env_steps=3000 --launch_type=local_mp
--set experiment.checkpoint_every_learner_steps=100`: 3,379 env steps, learner step 800,
its newest checkpoint kept (the two older ones and learning_curve.png left out for size).
"""

import os
import shutil
import sys

import numpy as np

from test_program import ROOT, read, run_to_end
from test_resume import recorded_transitions

FIXTURE = os.path.join(ROOT, "tests", "data", "run_made_before_the_layout")


def old_run(tmp_path) -> str:
    """A copy: resuming writes into the run."""
    run_dir = str(tmp_path / "old")
    shutil.copytree(FIXTURE, run_dir)
    return run_dir


def test_an_earlier_run_evaluates_and_its_experience_is_replayed(tmp_path, capsys):
    import environments
    from experiments import configs, evaluate
    from launch.runtime.run_setup import RaERequest, resolve_rae

    run_dir = old_run(tmp_path)
    assert evaluate.main([f"--run={run_dir}", "--episodes=2"]) == 0
    shown = capsys.readouterr().out
    assert "checkpoint" in shown and f"{run_dir}/checkpoints/800" in shown and "mean return" in shown
    # RaE takes its recorded steps: every step after an episode's FIRST is one transition.
    config = configs.make_experiment_config(agent="mpo", task="cartpole:swingup", run_dir=str(tmp_path / "new"),
                                            preset="debug")
    rae = resolve_rae(config, RaERequest(runs=(run_dir,)), environments.environment_spec(config.environment))
    # 3 whole episodes and 378 steps of a fourth (the step that was waiting for its action at the stop is not kept).
    assert rae.runs == (run_dir,) and rae.offline_items == recorded_transitions(run_dir) == 3378
    assert np.isclose(rae.ratio, 0.5)


def test_an_earlier_run_resumes_from_its_newest_checkpoint(tmp_path):
    run_dir = old_run(tmp_path)
    output = run_to_end([sys.executable, "-m", "experiments.train", f"--resume={run_dir}", "--max_env_steps=5000",
                         "--launch_type=local_mt"])
    # The checkpoint's counts (the counter's totals when it was saved), and every recorded step back in replay.
    assert (f"Resuming {run_dir} (launch 2) from learner step 800: env steps 3,100, 3,378 recorded transitions "
            "back into replay") in output
    summary = read(run_dir, "summary.json")
    assert summary["reached_max_env_steps"] and summary["env_steps"] >= 5000
    assert summary["resumed_at"] == {"env_steps": 3100, "learner_steps": 800}
    assert read(run_dir, "learner.json")["learner_steps"] > 800
    [resume] = read(run_dir, "resumes.json")
    assert resume["checkpoint"].endswith("checkpoints/800") and resume["launch_index"] == 1
