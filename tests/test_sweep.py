"""Sweep specs (experiments/sweep/spec.py): the runs a spec expands to, and each kind of bad
spec refused before anything starts, naming what is wrong."""

import json
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
