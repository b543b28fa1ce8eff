"""The command-line entry points, run as a user runs them."""

import dataclasses
import json
import subprocess
import sys

import pytest

import agents
from experiments.bench import __main__ as bench
from experiments import rollout


def test_env_benchmark_writes_consistent_json(tmp_path, capsys):
    out = tmp_path / "env.json"
    assert bench.main(["env", "--env=cartpole:swingup", "--steps_per_block=200", "--blocks=3", f"--out={out}"]) == 0
    result = json.loads(out.read_text())
    assert result["task"] == "cartpole:swingup" and result["blocks"] == 3
    assert len(result["raw_steps_per_s"]) == len(result["relay_steps_per_s"]) == 3
    for raw, relay, ratio in zip(result["raw_steps_per_s"], result["relay_steps_per_s"], result["relay_over_raw"]):
        assert ratio == pytest.approx(relay / raw)
    assert "wrapper overhead" in capsys.readouterr().out
    # An existing result is never overwritten.
    with pytest.raises(FileExistsError, match="not overwritten"):
        bench.main(["env", "--env=cartpole:swingup", "--steps_per_block=10", "--blocks=1", f"--out={out}"])


def test_rollout_random_policy_summary(tmp_path):
    run_dir = tmp_path / "rollout"
    assert rollout.main(["--env=cartpole:swingup", "--episodes=2", "--action_repeat=2", f"--run_dir={run_dir}"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] == 2 * 500  # 1000 control steps / action repeat 2, per episode
    assert summary["mean_return"] == pytest.approx(sum(summary["episode_returns"]) / 2)
    # Same seed, same random policy, same returns.
    again = tmp_path / "again"
    rollout.main(["--env=cartpole:swingup", "--episodes=2", "--action_repeat=2", f"--run_dir={again}"])
    assert json.loads((again / "summary.json").read_text())["episode_returns"] == summary["episode_returns"]


def test_rollout_rejects_unknown_task(tmp_path, capsys):
    assert rollout.main(["--env=walker:fly", f"--run_dir={tmp_path}"]) == 2
    assert "Valid names" in capsys.readouterr().err


def test_bench_is_runnable_as_a_module(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "experiments.bench", "env", "--env=pendulum:swingup",
         "--steps_per_block=50", "--blocks=1", f"--out={tmp_path / 'b.json'}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "b.json").read_text())["task"] == "pendulum:swingup"


# Slow: a benchmark's plumbing (about 25 s in the suite); `make test-all` and
# experiments/results/house/bench_smoke.sh run it.
@pytest.mark.slow
def test_actor_costs_benchmark_times_each_part_of_the_actor_loop(tmp_path):
    out = tmp_path / "costs.json"
    result = subprocess.run(
        [sys.executable, "-m", "experiments.bench", "actor_costs", "--env=cartpole:swingup", "--envs_per_actor=1,2",
         "--steps_per_block=200", "--blocks=2", f"--out={out}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    settings = json.loads(out.read_text())["settings"]
    assert [s["envs_per_actor"] for s in settings] == [1, 2]
    for setting in settings:
        for parts, alone in zip(setting["blocks"]["loop_parts_us"], setting["blocks"]["step_alone_us"]):
            assert set(parts) == {"policy", "step", "write", "record"} and min(parts.values()) > 0 and alone > 0
        totals = sorted(sum(parts.values()) for parts in setting["blocks"]["loop_parts_us"])
        assert setting["loop_total_us"] == pytest.approx(sum(totals) / 2)  # the median of two blocks
    assert "alone/loop" in result.stdout


# Slow: the benchmarks' plumbing, not training (about 40 s); `make test-all` and
# experiments/results/house/bench_smoke.sh run it. Its launch path is local_mp's (test_program).
@pytest.mark.slow
def test_the_benchmarks_acting_program_runs_to_its_budget_through_the_launch_runtime(tmp_path):
    """The actor, scaling and multinode benchmarks' program (acting.run_acting_program): replay,
    counter, an actor and a policy server started as local_mp starts them, until the budget."""
    import psutil
    from experiments.bench import acting
    from test_program import assert_no_orphans

    before, run_dir = set(psutil.pids()), str(tmp_path / "acting")
    result = acting.run_acting_program("cartpole:swingup", 1, 2500, run_dir)
    counts = json.loads((tmp_path / "acting" / "counts.json").read_text())
    assert counts["actor_steps"] >= 2500
    # Rates from the actor's episodes after its first (cartpole's are 1000 steps) and the monitor's rows.
    assert len(result["actor_episode_steps_per_s"][0]) >= 1 and result["total_env_steps_per_s"] > 0
    assert_no_orphans(before, run_dir)


def test_the_critic_head_is_set_with_the_head_section():
    from experiments import configs

    config = configs.make_experiment_config(
        agent="dmpo", task="cartpole:swingup", run_dir="/tmp/unused",
        overrides=["head.num_atoms=101", "head.v_max=200", "learner.num_samples=10"])
    assert config.learner.critic_head == agents.CategoricalHead(num_atoms=101, v_min=-150.0, v_max=200.0)
    assert config.learner.num_samples == 10
    mixture = configs.make_experiment_config(agent="mog", task="cartpole:swingup", run_dir="/tmp/unused",
                                             overrides=["head.num_components=3"])
    assert mixture.learner.critic_head == agents.MixtureHead(num_components=3)
    with pytest.raises(ValueError, match="head has no field 'num_atoms'; fields: init_scale, num_components"):
        configs.make_experiment_config(agent="mog", task="cartpole:swingup", run_dir="/tmp/unused",
                                       overrides=["head.num_atoms=101"])
    with pytest.raises(ValueError, match="CategoricalHead needs v_min < v_max"):
        configs.make_experiment_config(agent="dmpo", task="cartpole:swingup", run_dir="/tmp/unused",
                                       overrides=["head.v_min=300"])


def test_the_defaults_are_acmes_control_baseline_acme_is_mpoconfig_and_set_still_wins():
    import agents
    from experiments import configs
    from replay.config import ReplayConfig

    config = configs.make_experiment_config(agent="mog", task="cartpole:swingup", run_dir="/tmp/unused",
                                            overrides=["replay.n_step=3"])
    assert (config.learner.learning_rate, config.learner.epsilon_mean, config.learner.policy_init_scale) == (3e-4, 0.01, 0.5)
    assert config.learner.critic_layer_sizes == (256, 256, 256)
    assert (config.replay.samples_per_insert, config.replay.n_step) == (64.0, 3)
    # "control", the name these settings had as a preset, gives the same config.
    assert configs.make_experiment_config(agent="mog", task="cartpole:swingup", run_dir="/tmp/unused",
                                          preset="control", overrides=["replay.n_step=3"]) == config
    # "acme": Acme's MPOConfig and replay defaults, verbatim.
    acme = configs.make_experiment_config(agent="mog", task="cartpole:swingup", run_dir="/tmp/unused", preset="acme")
    assert acme.learner == agents.make_config("mog") and acme.replay == ReplayConfig()
    assert (acme.learner.learning_rate, acme.replay.samples_per_insert, acme.replay.n_step) == (1e-4, 32.0, 5)
    assert acme.learner.critic_layer_sizes == (512, 512, 256)
    # "small": the defaults with smaller networks and batches, the same updates per env step.
    small = configs.make_experiment_config(agent="mog", task="cartpole:swingup", run_dir="/tmp/unused", preset="small")
    assert (small.learner.policy_layer_sizes, small.learner.critic_layer_sizes) == ((256, 256), (256, 256))
    assert (small.learner.num_samples, small.replay.batch_size, small.learner.learning_rate) == (10, 128, 3e-4)
    assert small.replay.samples_per_insert / small.replay.batch_size == config.replay.samples_per_insert / 256
    with pytest.raises(ValueError, match="Unknown preset 'fast'; choose one of default, control, small, acme, pixels, pixels_small, debug"):
        configs.make_experiment_config(agent="mog", task="cartpole:swingup", run_dir="/tmp/unused", preset="fast")


def test_pixel_runs_are_configured_with_their_preset_and_the_pixels_and_encoder_sections():
    import agents
    import environments
    from experiments import configs
    from launch.config import ExperimentConfig, dataclass_from_json

    config = configs.make_experiment_config(agent="dmpo", task="cartpole:swingup", run_dir="/tmp/unused",
                                            preset="pixels", overrides=["pixels.height=64", "encoder.shared=false"])
    assert config.environment.pixels == environments.PixelConfig(height=64, width=84, frame_stack=3)
    assert config.environment.action_repeat == 2 and config.replay.n_step == 3
    assert config.learner.pixel_encoder == agents.PixelEncoderConfig(shared=False)
    # Setting a pixels field turns pixel observations on from the state defaults.
    on = configs.make_experiment_config(agent="mpo", task="cartpole:swingup", run_dir="/tmp/unused",
                                        overrides=["pixels.frame_stack=2"])
    assert on.environment.pixels == environments.PixelConfig(frame_stack=2)
    # A run's config.json gives the same config back.
    assert dataclass_from_json(ExperimentConfig, json.loads(json.dumps(dataclasses.asdict(config)))) == config
    with pytest.raises(ValueError, match="learns from pixels or from the state, not both"):
        configs.make_experiment_config(agent="mpo", task="cartpole:swingup", run_dir="/tmp/unused",
                                       overrides=["pixels.include_state=true"])
    with pytest.raises(ValueError, match="environment.pixels is set with --set pixels"):
        configs.parse_overrides(["environment.pixels=none"])
