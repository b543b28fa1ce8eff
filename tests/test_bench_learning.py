"""`bench learning --merge`: outputs of separate invocations combined, never silently doubled."""

import argparse
import csv
import json

import pytest

from experiments.bench import learning_bench


def write_output(directory, agent, seed, returns, task="cartpole:swingup", max_env_steps=1000):
    directory.mkdir()
    with open(directory / "curves.csv", "w") as file:
        file.write(",".join(learning_bench.CSV_FIELDS) + "\n")
        for i, value in enumerate(returns):
            file.write(f"{agent},{seed},{100 * i},{10 * i},{value:.2f},0.00\n")
    runs = [{"agent": agent, "seed": seed, "final_eval_return": returns[-1], "best_eval_return": max(returns)}]
    with open(directory / "summary.json", "w") as file:
        json.dump({"command": f"python -m experiments.bench learning --agents={agent}", "task": task,
                   "max_env_steps": max_env_steps, "seeds": [seed], "runs": runs}, file)
    (directory / f"train-{agent}-s{seed}.log").write_text("log\n")


def merge(paths, out_dir):
    args = argparse.Namespace(merge=",".join(str(p) for p in paths), out_dir=str(out_dir))
    return learning_bench.run(args)


def test_merge_combines_curves_summaries_and_logs(tmp_path):
    write_output(tmp_path / "a", "mog", 0, [0.0, 10.0, 30.0])
    write_output(tmp_path / "b", "mog", 1, [0.0, 50.0])
    write_output(tmp_path / "c", "mpo", 0, [0.0, 20.0, 80.0])
    assert merge([tmp_path / "a", tmp_path / "b", tmp_path / "c"], tmp_path / "out") == 0
    with open(tmp_path / "out" / "curves.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(r["agent"], r["seed"], r["mean_return"]) for r in rows][-3:] == [
        ("mpo", "0", "0.00"), ("mpo", "0", "20.00"), ("mpo", "0", "80.00")]
    assert len(rows) == 8
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["mean_final_eval_return"] == {"mog": 40.0, "mpo": 80.0}
    assert summary["seeds"] == [0, 1] and len(summary["merged_from"]) == 3
    assert sorted(p.name for p in (tmp_path / "out").glob("train-*.log")) == [
        "train-mog-s0.log", "train-mog-s1.log", "train-mpo-s0.log"]
    assert (tmp_path / "out" / "learning_curves.png").stat().st_size > 10_000


def test_merge_refuses_doubled_runs_other_tasks_and_non_outputs(tmp_path):
    write_output(tmp_path / "a", "mog", 0, [0.0, 10.0])
    write_output(tmp_path / "b", "mog", 0, [0.0, 20.0])
    write_output(tmp_path / "c", "mpo", 0, [0.0, 20.0], task="walker:walk")
    (tmp_path / "d").mkdir()
    with pytest.raises(SystemExit, match=r"\('mog', 0\)\] appear in more than one directory"):
        merge([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    with pytest.raises(SystemExit, match="needs one task and step budget"):
        merge([tmp_path / "a", tmp_path / "c"], tmp_path / "out")
    with pytest.raises(SystemExit, match="no curves.csv or summary.json"):
        merge([tmp_path / "a", tmp_path / "d"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
