"""Sweep specs (experiments/sweep/spec.py): the runs a spec expands to, and each kind of bad
spec refused before anything starts, naming what is wrong."""

import json
import os
import subprocess
import sys

import pytest

from experiments.sweep.spec import BASE_WAVE, SpecError, expand, sources
from test_program import ROOT

SPEC = {"max_env_steps": 300000, "num_actors": 2, "agents": ["mpo", "mog"], "tasks": ["walker:walk", "finger:spin"],
        "seeds": [0, 1, 2], "variants": {"lr3e-4": ["learner.learning_rate=3e-4"], "base": []},
        "waves": [{"name": "rae", "seeds": [3, 4], "agents": ["mog"], "variants": {"base": []},
                   "replay": {"from": ["base"], "match": ["task", "agent"], "ratio": 0.25}}]}


def test_a_spec_expands_to_every_combination_and_a_wave_replays_its_matching_earlier_runs():
    runs = expand(SPEC)
    base = [run for run in runs if run.wave == BASE_WAVE]
    assert len(base) == 2 * 2 * 2 * 3 and len(runs) == len(base) + 2 * 2
    assert len({run.run_dir("S") for run in runs}) == len(runs)  # every run a directory of its own
    run = next(run for run in base if run.name == "walker_walk/mpo-lr3e-4/seed1")
    assert run.overrides == ("learner.learning_rate=3e-4",) and run.num_actors == 2 and run.max_env_steps == 300000
    assert run.run_dir("S") == "S/base/walker_walk/mpo-lr3e-4/seed1" and sources(run, runs) == []
    # A wave's run replays the earlier runs of its task and agent: both variants, every seed.
    [replaying] = [run for run in runs if run.wave == "rae" and run.name == "finger_spin/mog-base/seed4"]
    replayed = sources(replaying, runs)
    assert len(replayed) == 2 * 3 and {(r.task, r.agent) for r in replayed} == {("finger:spin", "mog")}
    assert replaying.replay.ratio == 0.25 and replaying.max_env_steps == 300000  # the rest from the top level


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(agents=["mpo", "sac"]), "Unknown agent 'sac'"),
    (lambda s: s.update(tasks=["walker:walkk"]), "Unknown task 'walker:walkk'"),
    (lambda s: s.update(seed=[0]), "top level: unknown field seed; the fields are"),
    (lambda s: s.update(set=["learner.learning_rat=1e-3"]), "learning_rat"),
    (lambda s: s["waves"][0].update(replay={"from": ["later"]}), "later is not an earlier wave"),
    (lambda s: s["waves"][0].update(tasks=["cartpole:swingup"]), "would replay nothing"),
    (lambda s: s["waves"][0]["replay"].update(ratio=1.5), "--rae_ratio must be in (0, 1)"),
    (lambda s: s["waves"][0].update(name=BASE_WAVE), "give each wave a name of its own"),
    (lambda s: s.pop("max_env_steps"), "give max_env_steps"),
    (lambda s: s.update(max_env_steps=None), "top level.max_env_steps: give a positive integer, got None"),
    (lambda s: s.update(variants={"lr/2": []}), "name each variant with letters, digits, _ and -"),
    (lambda s: s.update(seeds=[0, 1, 0]), "two runs would share the directory base/walker_walk/mpo-"),
])
def test_a_bad_spec_is_refused_naming_what_is_wrong(change, message):
    spec = json.loads(json.dumps(SPEC))
    change(spec)
    with pytest.raises(SpecError, match="sweep spec") as error:
        expand(spec)
    assert message in str(error.value)


def test_plan_lists_the_runs_and_refuses_a_bad_spec_with_exit_2(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC))
    result = subprocess.run([sys.executable, "-m", "experiments.sweep", "plan", str(path), "--dir=S"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("28 runs in 2 waves (base, rae)")
    assert "S/rae/finger_spin/mog-base/seed4  300,000 env steps  replays 6 runs of base at 0.25" in result.stdout
    path.write_text(json.dumps({**SPEC, "agents": ["sac"]}))
    result = subprocess.run([sys.executable, "-m", "experiments.sweep", "plan", str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "error: sweep spec, run base/" in result.stderr and "sac" in result.stderr
    assert not (tmp_path / "S").exists()


def test_the_bootstrap_interval_and_the_band_match_a_direct_computation():
    import numpy as np

    from experiments.curves import bootstrap_interval, first_reaching, mean_band

    values = [710.0, 802.5, 655.0]
    low, high = bootstrap_interval(values, resamples=4000, seed=3)
    # Every resample of three values, by enumeration: the 27 equally likely means.
    means = np.sort([np.mean([a, b, c]) for a in values for b in values for c in values])
    assert means[0] <= low <= np.quantile(means, 0.05) and np.quantile(means, 0.95) <= high <= means[-1]
    assert bootstrap_interval([5.0]) == (5.0, 5.0)
    steps, mean, lowest, highest = mean_band([([0, 100, 200], [0.0, 10.0, 20.0]), ([0, 50, 150], [0.0, 0.0, 30.0])],
                                             points=4)
    assert list(steps) == [0, 50, 100, 150]  # up to the shorter curve's end
    assert np.allclose(mean, [0.0, 2.5, 12.5, 22.5]) and np.allclose(lowest, [0, 0, 10, 15])
    assert np.allclose(highest, [0, 5, 15, 30])
    assert first_reaching([{"env_steps": 10, "mean_return": 1.0}, {"env_steps": 20, "mean_return": 9.0}], 5.0) == 20


def test_a_runs_wall_time_adds_its_launches_each_to_its_counters_last_save(tmp_path):
    from experiments.sweep.report import wall_time_s

    for launch, (started, last_save) in enumerate([(1000.0, 1600.0), (5000.0, 5300.5)]):
        os.makedirs(tmp_path / "launches" / str(launch))
        path = tmp_path / "launches" / str(launch) / "counter_state.json"
        path.write_text(json.dumps({"started_at": started}))
        os.utime(path, (last_save, last_save))
    assert wall_time_s(str(tmp_path)) == pytest.approx(600.0 + 300.5)
    assert wall_time_s(str(tmp_path / "elsewhere")) is None


def test_a_sweep_takes_a_new_spec_only_if_its_started_runs_stay_as_they_were(tmp_path):
    from experiments.sweep.sweep_dir import NotASweep, start_sweep

    spec = {"agents": ["mpo"], "tasks": ["cartpole:swingup"], "seeds": [0, 1], "max_env_steps": 1000}
    sweep = start_sweep(str(tmp_path / "S"), spec)
    [first, second] = sweep.runs()
    os.makedirs(sweep.run_dir(first))
    open(os.path.join(sweep.run_dir(first), "config.json"), "w").close()  # started
    with pytest.raises(NotASweep, match="run base/cartpole_swingup/mpo/seed0 has started with other settings"):
        start_sweep(sweep.root, {**spec, "set": ["learner.learning_rate=1e-3"]})
    assert json.load(open(sweep.spec)) == spec
    # More seeds and a larger budget: taken, the old spec kept beside.
    start_sweep(sweep.root, {**spec, "seeds": [0, 1, 2], "max_env_steps": 2000})
    assert [run.max_env_steps for run in sweep.runs()] == [2000] * 3
    [kept] = [name for name in os.listdir(sweep.root) if name.startswith("sweep.") and name != "sweep.json"]
    assert json.load(open(os.path.join(sweep.root, kept))) == spec


def test_a_wave_replays_the_best_k_of_its_matching_runs_by_final_return(tmp_path):
    from experiments.sweep.runner import LaunchFlags, chosen_sources, train_command
    from experiments.sweep.state import NEW, RunStatus
    from experiments.sweep.sweep_dir import start_sweep

    spec = {"agents": ["mog"], "tasks": ["cartpole:swingup"], "seeds": [0, 1, 2], "max_env_steps": 1000,
            "waves": [{"name": "rae", "seeds": [5], "replay": {"from": ["base"], "best": 2, "ratio": 0.3}}]}
    sweep = start_sweep(str(tmp_path / "S"), spec)
    runs = sweep.runs()
    for run, final in zip(runs[:3], (400.0, 900.0, 650.0)):
        os.makedirs(sweep.run_dir(run))
        with open(os.path.join(sweep.run_dir(run), "summary.json"), "w") as file:
            json.dump({"final_eval_return": final, "env_steps": 1000}, file)
    assert [run.seed for run in chosen_sources(sweep, runs[3], runs)] == [1, 2]
    command = train_command(sweep, runs[3], runs, RunStatus(NEW), LaunchFlags())
    assert f"--rae_from={sweep.run_dir(runs[1])},{sweep.run_dir(runs[2])}" in command and "--rae_ratio=0.3" in command
    assert "--seed=5" in command and "--launch_type=local_mp" in command
    bad = json.loads(json.dumps(spec))
    bad["waves"][0]["replay"]["best"] = 4
    with pytest.raises(SpecError, match="has 3 matching runs, fewer than best=4"):
        expand(bad)


def test_only_names_runs_by_their_paths_or_first_parts_and_refuses_what_would_wait_forever(tmp_path, capsys):
    from experiments.sweep.__main__ import main
    from experiments.sweep.spec import select_runs

    runs = expand(SPEC)

    def paths(*patterns):
        return [f"{run.wave}/{run.name}" for run in select_runs(runs, list(patterns))]

    assert paths("rae") == [f"rae/{task}/mog-base/seed{seed}" for task in ("walker_walk", "finger_spin")
                            for seed in (3, 4)]
    assert paths("base/finger_spin/mpo-lr3e-4/seed2", "rae/walker_walk/") == [
        "base/finger_spin/mpo-lr3e-4/seed2", "rae/walker_walk/mog-base/seed3", "rae/walker_walk/mog-base/seed4"]
    assert len(paths("*/*/*/seed1")) == 2 * 2 * 2 and len(paths("base/*/mog-*")) == 2 * 2 * 3
    with pytest.raises(SpecError, match="--only: base/walker_walk/sac, seed9 names no run of this sweep") as error:
        select_runs(runs, ["base/walker_walk/sac", "seed9", "rae"])
    assert "(its waves: base, rae)" in str(error.value)
    # A replaying run named without the runs it replays, none finished: it would wait for ever.
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC))
    code = main(["run", str(path), f"--dir={tmp_path / 'S'}", "--only=rae/finger_spin/*/seed4"])
    message = capsys.readouterr().err
    assert code == 2 and "--only: rae/finger_spin/mog-base/seed4 replays base/finger_spin/mog-lr3e-4/seed0" in message
    assert "which --only leaves out and which have not finished; name them too" in message
    assert not (tmp_path / "S").exists()


def test_a_groups_band_is_drawn_from_its_finished_seeds_while_another_goes():
    from experiments.curves import mean_band
    from experiments.sweep.report import drawn_runs

    finished = [{"state": "finished", "curve": [(0, 0.0), (1000, 500.0 + 100 * seed)]} for seed in range(2)]
    going = {"state": "going", "curve": [(0, 0.0), (50, 1.0)]}
    drawn, left_out = drawn_runs(finished + [going, {"state": "new", "curve": []}])
    assert drawn == finished and left_out == 1
    steps, mean, _, _ = mean_band([tuple(zip(*run["curve"])) for run in drawn], points=3)
    assert list(steps) == [0, 500, 1000] and list(mean) == [0.0, 275.0, 550.0]  # not cut at the going run's 50
    assert drawn_runs([going]) == ([going], 0)  # none finished yet: what there is
