"""Sweeps run for real (python -m experiments.sweep): runs at once, a wave replaying the first,
a re-run that does only what is missing, status, report, stop, and directories that are not
sweeps. Debug-sized runs, as threads of one process each (local_mt: the quickest to start)."""

import csv
import json
import os
import signal
import statistics
import subprocess
import sys

import psutil
import pytest

from test_program import ROOT, csv_rows, new_orphans, read, wait_for

pytestmark = pytest.mark.xdist_group("programs")

BASE = {"agents": ["mpo", "mog"], "tasks": ["cartpole:swingup"], "seeds": [0, 1], "presets": ["debug"],
        "max_env_steps": 1500, "set": ["experiment.eval_every_learner_steps=40"]}
SPEC = {**BASE, "waves": [{"name": "rae", "agents": ["mog"], "seeds": [2],
                           "replay": {"from": ["base"], "match": ["task", "agent"], "ratio": 0.25}}]}


def sweep_command(*args):
    return [sys.executable, "-m", "experiments.sweep", *args]


def sweep(*args, timeout=120):
    return subprocess.run(sweep_command(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def write_spec(path, spec):
    path.write_text(json.dumps(spec))
    return str(path)


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """2 agents x 2 seeds, two at a time, then a wave of one mog run replaying both base mog runs."""
    root = tmp_path_factory.mktemp("sweep")
    before = {process.pid for process in psutil.process_iter()}
    result = sweep("run", write_spec(root / "spec.json", SPEC), f"--dir={root / 'S'}", "--parallel=2",
                   "--launch_type=local_mt", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert new_orphans(before, str(root)) == []
    return str(root / "S"), result.stdout


def test_a_sweep_runs_two_at_a_time_and_a_wave_replays_the_first_with_the_exact_share(finished_sweep):
    sweep_dir, output = finished_sweep
    events = [line.split("] ", 1)[1] for line in output.splitlines() if line.startswith("[")]
    starts = [event for event in events if event.startswith("start ")]
    assert len(starts) == 5 and "5 finished" in events[-1]
    # The first two started before any run finished, and the wave's run only once its sources had.
    first_finish = next(i for i, event in enumerate(events) if event.startswith("finished "))
    assert sum(event.startswith("start base/") for event in events[:first_finish]) == 2
    wave_start = events.index(next(event for event in events if event.startswith("start rae/")))
    mog_finishes = [i for i, event in enumerate(events) if event.startswith("finished base/cartpole_swingup/mog")]
    assert len(mog_finishes) == 2 and max(mog_finishes) < wave_start
    for agent in ("mpo", "mog"):
        for seed in (0, 1):
            run_dir = os.path.join(sweep_dir, "base", "cartpole_swingup", f"{agent}-debug", f"seed{seed}")
            config = read(run_dir, "config.json")
            assert (config["agent"], config["seed"], config["max_env_steps"]) == (agent, seed, 1500)
            assert read(run_dir, "summary.json")["reached_max_env_steps"]
    # The wave's run replays exactly the two base mog runs: every transition they recorded, and a
    # quarter of every batch of 32 from them.
    replaying = os.path.join(sweep_dir, "rae", "cartpole_swingup", "mog-debug", "seed2")
    sources = [os.path.join(sweep_dir, "base", "cartpole_swingup", "mog-debug", f"seed{seed}") for seed in (0, 1)]
    assert read(replaying, "config.json")["rae"]["runs"] == sources
    recorded = sum(read(source, f"actor_{i}.json")["actor_steps"] for source in sources for i in range(2))
    items = read(replaying, "rae.json")["items"]
    assert recorded - 8 <= items <= recorded  # an episode cut by the stop leaves its last step unrecorded
    rows = csv_rows(replaying, "learner")
    assert rows and all(row["rae_offline_items"] == 8 for row in rows)


def test_status_and_report_give_the_runs_own_figures(finished_sweep):
    sweep_dir, _ = finished_sweep
    status = sweep("status", sweep_dir)
    assert status.returncode == 0 and status.stdout.splitlines()[0].endswith(": 5 finished")
    summaries = {}
    for line in status.stdout.splitlines()[2:]:
        name, state, steps, _, budget, latest = line.split(None, 5)
        run_dir = os.path.join(sweep_dir, name)
        summaries[name] = read(run_dir, "summary.json")
        last_eval = csv_rows(run_dir, "evaluator")[-1]
        assert state == "finished" and steps == f"{summaries[name]['env_steps']:,}" and budget == "1,500"
        assert latest.split() == [f"{last_eval['mean_return']:.1f}", "@", f"{int(last_eval['env_steps']):,}"]

    out = os.path.join(os.path.dirname(sweep_dir), "report")
    report = sweep("report", sweep_dir, f"--out={out}")
    assert report.returncode == 0, report.stderr
    with open(os.path.join(out, "table.csv")) as file:
        table = {(row["wave"], row["agent"]): row for row in csv.DictReader(file)}
    assert set(table) == {("base", "mpo-debug"), ("base", "mog-debug"), ("rae", "mog-debug")}
    for (wave, label), row in table.items():
        runs = [s for name, s in summaries.items() if name.startswith(f"{wave}/cartpole_swingup/{label}/")]
        finals = [run["final_eval_return"] for run in runs]
        assert int(row["finished"]) == len(runs) == (2 if wave == "base" else 1)
        assert float(row["final_mean"]) == pytest.approx(statistics.mean(finals), rel=1e-6)
        assert float(row["final_min"]) == pytest.approx(min(finals)) and float(row["final_max"]) == pytest.approx(max(finals))
        assert min(finals) - 1e-6 <= float(row["final_ci_low"]) <= float(row["final_ci_high"]) <= max(finals) + 1e-6
        assert float(row["best_max"]) == pytest.approx(max(run["best_eval_return"] for run in runs))
        assert float(row["env_steps"]) == pytest.approx(statistics.mean(run["env_steps"] for run in runs))
    assert table[("rae", "mog-debug")]["replays"] == "2 runs at 0.25"
    with open(os.path.join(out, "report.json")) as file:
        [rae] = json.load(file)["rae"]
    # The replaying run against the same agent from scratch (base: no wave from scratch has seed 2).
    scratch = [s["final_eval_return"] for n, s in summaries.items() if n.startswith("base/cartpole_swingup/mog-debug/")]
    assert rae["scratch_wave"] == "base" and rae["threshold"] == pytest.approx(0.9 * statistics.mean(scratch))
    with open(os.path.join(out, "curves_cartpole_swingup.png"), "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"

    # The same spec in a sweep directory where nothing ran, reported --with the first report: the
    # same table, each run's figures taken from it.
    from experiments.sweep.report import write_report
    from experiments.sweep.sweep_dir import start_sweep

    again = start_sweep(os.path.join(os.path.dirname(sweep_dir), "again"), SPEC)
    joined_out = os.path.join(again.root, "report")
    write_report(again, again.runs(), joined_out, earlier=os.path.join(out, "report.json"))
    with open(os.path.join(joined_out, "table.csv")) as file, open(os.path.join(out, "table.csv")) as first:
        assert list(csv.DictReader(file)) == list(csv.DictReader(first))
    with open(os.path.join(joined_out, "table.md")) as file:
        assert "5 of the 5 runs' figures come from " in file.read()
    # A run that had not finished there is not taken.
    with open(os.path.join(out, "report.json")) as file:
        earlier = json.load(file)
    earlier["runs"][0]["state"] = "unfinished"
    with open(os.path.join(again.root, "earlier.json"), "w") as file:
        json.dump(earlier, file)
    write_report(again, again.runs(), joined_out, earlier=os.path.join(again.root, "earlier.json"))
    with open(os.path.join(joined_out, "report.json")) as file:
        runs = json.load(file)["runs"]
    assert runs[0]["state"] == "new" and "reported_in" not in runs[0] and runs[1]["reported_in"]
    # A report of another budget is not these runs'; a file that is no report is refused.
    other = start_sweep(os.path.join(os.path.dirname(sweep_dir), "other"), {**SPEC, "max_env_steps": 3000})
    with pytest.raises(ValueError, match="base/cartpole_swingup/mpo-debug/seed0 has seed 0, 1,500 env steps"):
        write_report(other, other.runs(), joined_out, earlier=os.path.join(out, "report.json"))
    with pytest.raises(ValueError, match="is not a sweep report; give the report.json"):
        write_report(other, other.runs(), joined_out, earlier=os.path.join(sweep_dir, "sweep.json"))


def _kill_all(popens, within):
    """Kills what the test started and anything still running a run of `within`, by process id."""
    for process in popens:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    for process in _process_with(within):
        process.kill()


def _process_with(text):
    return [p for p in psutil.process_iter(["pid", "cmdline"]) if text in " ".join(p.info["cmdline"] or [])
            and "experiments.train" in " ".join(p.info["cmdline"] or [])]


def test_a_rerun_skips_finished_runs_resumes_a_killed_one_and_leaves_one_going_alone(tmp_path):
    """Runner A (one at a time) finishes seed 0 and is SIGKILLed with seed 1's launcher mid-run;
    seed 2 is then started by hand into the sweep. Runner B, told --only seeds 0-2, skips seed
    0, resumes seed 1 from its checkpoint, never starts seed 2, which its own launcher
    finishes, and leaves seed 3 alone."""
    spec = {"agents": ["mpo"], "tasks": ["cartpole:swingup"], "seeds": [0, 1, 2, 3], "presets": ["debug"],
            "max_env_steps": 2000, "set": ["experiment.checkpoint_every_learner_steps=25"]}
    sweep_dir = str(tmp_path / "S")
    run_dirs = [os.path.join(sweep_dir, "base", "cartpole_swingup", "mpo-debug", f"seed{s}") for s in range(4)]
    before = {process.pid for process in psutil.process_iter()}
    runner = subprocess.Popen(sweep_command("run", write_spec(tmp_path / "spec.json", spec), f"--dir={sweep_dir}",
                                            "--parallel=1", "--launch_type=local_mt"),
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    hand = None
    try:
        wait_for(lambda: os.path.exists(os.path.join(run_dirs[1], "checkpoints")) and
                 any(name.isdigit() for name in os.listdir(os.path.join(run_dirs[1], "checkpoints"))),
                 240, "seed 1's first checkpoint")
        [launcher] = _process_with(run_dirs[1])
        runner.kill()
        launcher.kill()
        runner.wait(timeout=30)
        assert read(run_dirs[0], "summary.json")["reached_max_env_steps"]
        assert not os.path.exists(os.path.join(run_dirs[1], "summary.json"))
        assert "unfinished  " in sweep("status", sweep_dir).stdout  # the kernel let the claim go

        hand = subprocess.Popen([sys.executable, "-m", "experiments.train", "--agent=mpo", "--env=cartpole:swingup",
                                 "--seed=2", "--preset=debug", "--max_env_steps=5000", "--launch_type=local_mt",
                                 f"--run_dir={run_dirs[2]}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        from experiments.sweep.state import counter_of

        wait_for(lambda: counter_of(run_dirs[2]) is not None, 120, "seed 2's counter")
        # Resumed by hand while it goes: refused, before anything is written.
        twice = subprocess.run([sys.executable, "-m", "experiments.train", f"--resume={run_dirs[2]}"], cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
        assert twice.returncode == 2 and "is still going (its counter answers at" in twice.stderr
        # Two at once: a run going elsewhere counts as one of the sweep's runs at once.
        rerun = sweep("run", sweep_dir, "--launch_type=local_mt", "--parallel=2",
                      "--only=*/*/*/seed0,base/cartpole_swingup/mpo-debug/seed1,*/*/*/seed2", timeout=400)
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
        assert hand.wait(timeout=120) == 0
    finally:
        _kill_all([runner, hand], sweep_dir)
    events = [line.split("] ", 1)[1] for line in rerun.stdout.splitlines() if line.startswith("[")]
    assert [event.split()[:2] for event in events if event.split()[0] in ("start", "resume")] == [
        ["resume", "base/cartpole_swingup/mpo-debug/seed1"]]
    # It found seed 0 finished, seed 1 killed and seed 2 going (started by hand, for 5000 steps),
    # and left seed 3 as it was.
    assert "killed (no summary)" in events[0] and events[1] == "1 finished, 2 going, 1 new"
    assert events[-1] == "3 finished, 1 new" and not os.path.exists(run_dirs[3])
    resumed = read(run_dirs[1], "resumes.json")
    assert len(resumed) == 1 and read(run_dirs[1], "summary.json")["reached_max_env_steps"]
    assert sorted(os.listdir(os.path.join(run_dirs[2], "launches"))) == ["0"]  # started once
    assert os.listdir(os.path.join(run_dirs[0], "launches")) == ["0"]
    assert read(run_dirs[2], "summary.json")["reached_max_env_steps"]
    assert new_orphans(before, sweep_dir) == []


def test_a_detached_sweep_stops_cleanly_when_asked(tmp_path):
    """`run --detach` returns at once and its runner goes on alone; `stop` asks the run going to
    stop through its counter (it stops as on Ctrl-C: summary, final checkpoint) and the runner
    to start nothing more, and returns once nothing of the sweep is going."""
    spec = {"agents": ["mpo"], "tasks": ["cartpole:swingup"], "seeds": [0, 1], "presets": ["debug"],
            "max_env_steps": 1_000_000}
    sweep_dir = str(tmp_path / "S")
    before = {process.pid for process in psutil.process_iter()}
    started = sweep("run", write_spec(tmp_path / "spec.json", spec), f"--dir={sweep_dir}", "--parallel=1",
                    "--launch_type=local_mt", "--detach")
    assert started.returncode == 0 and "Detached: the sweep runner is pid" in started.stdout
    runner_pid = int(started.stdout.split("pid ")[1].split(";")[0])
    run_dir = os.path.join(sweep_dir, "base", "cartpole_swingup", "mpo-debug", "seed0")
    try:
        from test_program import learner_has_updated

        wait_for(lambda: learner_has_updated(run_dir), 180, "the first run's learner to update")
        stopped = sweep("stop", sweep_dir, timeout=200)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "asked base/cartpole_swingup/mpo-debug/seed0 to stop" in stopped.stdout
        wait_for(lambda: not psutil.pid_exists(runner_pid) or psutil.Process(runner_pid).status() == "zombie",
                 60, "the runner to end")
    finally:
        if psutil.pid_exists(runner_pid):
            os.kill(runner_pid, signal.SIGKILL)
        _kill_all([], sweep_dir)
    result = read(run_dir, "summary.json")
    assert result["stop_reason"] == "python -m experiments.sweep stop" and not result["reached_max_env_steps"]
    assert not os.path.exists(os.path.join(sweep_dir, "base", "cartpole_swingup", "mpo-debug", "seed1"))
    records = [json.loads(line) for line in open(os.path.join(sweep_dir, "runners.jsonl"))]
    assert [r["event"] for r in records] == ["start", "end"] and records[0]["pid"] == runner_pid
    status = sweep("status", sweep_dir).stdout
    assert "1 new, 1 unfinished" in status and "stopped: python -m experiments.sweep stop" in status
    assert new_orphans(before, sweep_dir) == []


def sweep_main(capsys, *args):
    from experiments.sweep.__main__ import main

    code = main(list(args))
    return code, capsys.readouterr().err


def test_a_directory_that_is_not_a_sweep_is_refused_untouched(tmp_path, finished_run, capsys):
    listing = sorted(os.listdir(finished_run))
    for command in ("status", "report", "stop", "run"):
        code, error = sweep_main(capsys, command, finished_run)
        assert code == 2 and f"{finished_run} is a run directory (no sweep.json)" in error, (command, error)
        code, error = sweep_main(capsys, command, str(tmp_path / "nowhere"))
        assert code == 2 and "is not a directory" in error, (command, error)
    assert sorted(os.listdir(finished_run)) == listing and not (tmp_path / "nowhere").exists()
    # A spec given a directory that holds other files, or a bad spec: nothing is written.
    code, error = sweep_main(capsys, "run", write_spec(tmp_path / "spec.json", BASE), f"--dir={finished_run}")
    assert code == 2 and "holds files and is not a sweep" in error
    assert sorted(os.listdir(finished_run)) == listing
    code, error = sweep_main(capsys, "run", write_spec(tmp_path / "bad.json", {**BASE, "agents": ["sac"]}),
                             f"--dir={tmp_path / 'S'}")
    assert code == 2 and "Unknown agent 'sac'" in error and not (tmp_path / "S").exists()
