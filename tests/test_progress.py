"""The launcher's progress line and the metrics files it reads."""

import io
import json
import threading
import time

import numpy as np
import pytest

from launch.rundir import metrics
from launch.runtime import progress

PROGRESS = {"env_steps": 12345, "max_env_steps": 60000, "env_steps_per_s": 185.2, "learner_steps": 1540,
            "learner_steps_per_s": 23.14, "replay_size": 12000, "episodes": 12, "elapsed_s": 65.4}


def test_progress_line_shows_rates_replay_eval_and_eta():
    latest_eval = {"mean_return": 148.25, "env_steps": 11000.0}
    # ETA: (60000 - 12345) / 185.2 = 257.3 s = 4:17.
    assert progress.format_progress(PROGRESS, latest_eval) == (
        "env 12,345/60,000 (185/s) | learner 1,540 (23.1/s) | replay 12,000 | eval 148.2 @ 11,000 | 1:05, ETA 4:17")


def test_progress_line_shows_the_rae_table_when_there_is_one():
    line = progress.format_progress(dict(PROGRESS, offline_size=3245), None)
    assert "| replay 12,000 + 3,245 RaE |" in line


def test_progress_line_says_which_job_of_how_many_a_slurm_run_is_in():
    line = progress.format_progress(dict(PROGRESS, job=(2, 10)), None)
    assert line.endswith("| 1:05, ETA 4:17 | job 2 of 10")


def test_progress_line_before_any_rate_or_evaluation():
    start = dict(PROGRESS, env_steps=0, env_steps_per_s=0.0, learner_steps=0, learner_steps_per_s=0.0,
                 replay_size=-1, elapsed_s=3700.0)
    assert progress.format_progress(start, None) == (
        "env 0/60,000 (0/s) | learner 0 (0.0/s) | replay ? | eval - | 1:01:40, ETA -")


def _write_run(run_dir, evaluations):
    writer = metrics.MetricsWriter(str(run_dir), "evaluator", step_key="env_steps")
    for env_steps, mean_return in evaluations:
        writer.write({"env_steps": env_steps, "learner_step": env_steps // 8, "mean_return": mean_return,
                      "std_return": 1.0, "episodes": 5, "wall_time_s": 2.0}, time.time())
    writer.close()


@pytest.mark.parametrize("interactive", [False, True])
def test_show_progress_prints_each_evaluation_once_and_the_progress_line(tmp_path, interactive):
    _write_run(tmp_path, [(0, 0.5), (8000, 42.0)])
    stream, done = io.StringIO(), threading.Event()
    shower = threading.Thread(target=progress.show_progress, args=(str(tmp_path), lambda: PROGRESS, done, stream, interactive),
                              kwargs={"refresh_s": 0.05, "plain_every_s": 0.0})
    line = progress.format_progress(PROGRESS, {"mean_return": 42.0, "env_steps": 8000})
    shower.start()
    deadline = time.time() + 60  # the printer's thread may be slow to run on a loaded machine
    while not ("42.0 ± 1.0" in stream.getvalue() and line in stream.getvalue()) and time.time() < deadline:
        time.sleep(0.05)
    done.set()
    shower.join(timeout=5)
    text = stream.getvalue()
    assert text.count("return      0.5 ± 1.0") == 1 and text.count("return     42.0 ± 1.0") == 1
    assert line in text
    if interactive:
        assert "\r\033[K" + line in text and text.endswith("\r\033[K")  # redrawn in place, cleared at the end
    else:
        assert "\r" not in text and (line + "\n") in text


def test_metrics_rows_are_kept_when_a_writer_reopens_and_a_partial_row_is_skipped(tmp_path):
    first = metrics.MetricsWriter(str(tmp_path), "learner", step_key="learner_step")
    first.write({"learner_step": 10, "critic_loss": 0.5}, time.time())
    first.close()
    second = metrics.MetricsWriter(str(tmp_path), "learner", step_key="learner_step")
    second.write({"learner_step": 20, "critic_loss": 0.25}, time.time())
    second.close()
    path = metrics.csv_path(str(tmp_path), "learner")
    with open(path, "a") as file:
        file.write("30,0.1")  # a row cut off mid-write
    assert metrics.read_rows(path) == [{"learner_step": 10.0, "critic_loss": 0.5},
                                       {"learner_step": 20.0, "critic_loss": 0.25}]
    with open(path) as file:
        assert file.read().count("learner_step") == 1  # one header


def test_metrics_writer_refuses_a_column_it_did_not_start_with(tmp_path):
    writer = metrics.MetricsWriter(str(tmp_path), "actor_0", step_key="actor_steps")
    writer.write({"actor_steps": 1000, "episode_return": 3.0}, time.time())
    with pytest.raises(ValueError, match="new_column"):
        writer.write({"actor_steps": 2000, "new_column": 1.0}, time.time())
    writer.close()


def test_metrics_writer_refuses_to_append_rows_of_other_columns(tmp_path):
    first = metrics.MetricsWriter(str(tmp_path), "learner", step_key="learner_step")
    first.write({"learner_step": 10, "critic_loss": 0.5}, time.time())
    first.close()
    second = metrics.MetricsWriter(str(tmp_path), "learner", step_key="learner_step")
    with pytest.raises(ValueError, match="has columns"):
        second.write({"learner_step": 20, "policy_loss": 0.25}, time.time())
    second.close()
    assert metrics.read_rows(metrics.csv_path(str(tmp_path), "learner")) == [{"learner_step": 10.0, "critic_loss": 0.5}]


def test_metrics_writer_widens_a_file_for_rows_with_more_columns(tmp_path):
    """A run resumed by a newer Relay whose learner logs more columns: earlier rows get nan in them."""
    first = metrics.MetricsWriter(str(tmp_path), "learner", step_key="learner_step")
    first.write({"learner_step": 10, "critic_loss": 0.5}, time.time())
    first.close()
    second = metrics.MetricsWriter(str(tmp_path), "learner", step_key="learner_step")
    second.write({"learner_step": 20, "critic_loss": 0.25, "skipped_updates": 0}, time.time())
    second.write({"learner_step": 30, "critic_loss": 0.125, "skipped_updates": 1}, time.time())
    second.close()
    rows = metrics.read_rows(metrics.csv_path(str(tmp_path), "learner"))
    assert [row["learner_step"] for row in rows] == [10.0, 20.0, 30.0]
    assert np.isnan(rows[0]["skipped_updates"]) and [row["skipped_updates"] for row in rows[1:]] == [0.0, 1.0]
    assert [row["critic_loss"] for row in rows] == [0.5, 0.25, 0.125]


def test_the_launcher_reads_progress_totals_and_the_stop_from_the_counter_over_rpc(tmp_path):
    import courier

    from experiments import configs
    from launch.nodes.counter import CounterNode, CountBuffer
    from launch.nodes.rpc import final_client

    config = configs.make_experiment_config(agent="mpo", task="cartpole:swingup", run_dir=str(tmp_path),
                                            preset="debug", max_env_steps=500)
    counter = CounterNode(config, finishing_nodes=("actor_0",))
    server = courier.Server("counter", port=None)
    for method in ("report_counts", "get_counts", "report_progress", "get_progress", "request_stop", "stop_reason",
                   "node_finished", "register_address", "lookup_address", "record_restart"):
        server.Bind(method, getattr(counter, method))
    server.Start()
    try:
        address = f"localhost:{server.port}"
        fetch = progress.counter_progress(address)
        client = courier.Client(address)
        actor = CountBuffer(client, prefix="actor", every_s=3600.0)
        actor.increment(steps=300, episodes=1)
        actor.increment(steps=150)
        assert fetch()["env_steps"] == 0  # held in the buffer until its interval or a flush
        actor.flush()
        client.report_counts("actor_1-x", {"actor_steps": 50})
        client.report_counts("actor_1-x", {"actor_steps": 50})  # a retried call the counter had applied
        client.report_counts("actor_1-x", {"actor_steps": 40})  # a late one: totals never go back
        client.report_counts("learner-y", {}, {"learner_steps": 7})
        client.report_progress({"env_steps_per_s": 90.0, "replay_size": 440})
        shown = fetch()
        assert (shown["env_steps"], shown["episodes"], shown["max_env_steps"], shown["learner_steps"]) == (500, 1, 500, 7)
        assert shown["env_steps_per_s"] == 90.0 and shown["replay_size"] == 440 and shown["stop_reason"] is None
        assert client.lookup_address("learner/0") is None
        client.register_address("learner/0", "10.0.0.3:4000")
        assert client.lookup_address("learner/0") == "10.0.0.3:4000"
        client.request_stop("max_env_steps")
        client.request_stop("a later reason")
        assert fetch()["stop_reason"] == "max_env_steps"
        record = {"node": "actor/1", "cause": "signal 9 (SIGKILL)", "attempt": 0, "ran_s": 12.5, "restarted": True}
        client.record_restart(record)
        assert fetch()["restarts"] == [record]
        assert progress.format_restart(record) == "restart: node actor/1 died (signal 9 (SIGKILL)) after 12.5 s; started again (1)"
        with open(tmp_path / "restarts.jsonl") as file:
            assert [json.loads(line) for line in file] == [record]
        final_client(address).node_finished("actor_0")
        assert counter._all_finished.is_set()
    finally:
        server.Stop()
    assert progress.counter_progress(address)() is None  # gone: the line keeps its last figures


def test_a_restarted_counter_goes_on_from_its_saved_state_and_counts_each_sender_once(tmp_path, monkeypatch):
    from experiments import configs
    from launch.nodes import process
    from launch.nodes.counter import CounterNode

    config = configs.make_experiment_config(agent="mpo", task="cartpole:swingup", run_dir=str(tmp_path),
                                            preset="debug", max_env_steps=500)
    first = CounterNode(config)
    first.report_counts("actor_0-a", {"actor_steps": 300, "actor_episodes": 1})
    first.report_counts("actor_1-b", {"actor_steps": 200})
    first.report_counts("learner-c", {}, {"learner_steps": 40})
    first.register_address("learner/0", "10.0.0.3:4000")
    first.record_restart({"node": "actor/0", "cause": "exit code 1", "restarted": True})
    first._save_state()
    first.report_counts("actor_1-b", {"actor_steps": 260})  # after the last save: lost with the counter...

    monkeypatch.setenv(process.ATTEMPT_ENV, "1")
    restarted = CounterNode(config)
    assert restarted.get_counts() == {"actor_steps": 500, "actor_episodes": 1, "learner_steps": 40}
    assert restarted.lookup_address("learner/0") == "10.0.0.3:4000" and len(restarted.get_restarts()) == 1
    restarted.report_counts("actor_1-b", {"actor_steps": 270})  # ...until its sender reports its totals again
    restarted.report_counts("actor_0-a", {"actor_steps": 300, "actor_episodes": 1})  # sent again: counted once
    assert restarted.get_counts()["actor_steps"] == 570
    # It has heard from nobody: each node is silent since it started, not since the launch did
    # (a job would take every node for lost the moment its counter came back).
    restarted.stop_reason(watcher="actor/0")
    time.sleep(0.2)
    silent = restarted.silent_for(["actor/0", "learner/0"])
    assert 0.2 <= silent["actor/0"] < silent["learner/0"] < 10.0


def test_an_older_process_of_a_node_is_told_it_was_replaced_and_is_not_heard(tmp_path):
    """Attempt 0 of actor/1 comes back after attempt 1 registered (its host cut off, the node
    started elsewhere): the counter tells it it was replaced, whatever the program's state, and
    its polls do not count as the node's (the job would not see the new process fall silent)."""
    from experiments import configs
    from launch.faults import SUPERSEDED
    from launch.nodes.counter import CounterNode

    config = configs.make_experiment_config(agent="mpo", task="cartpole:swingup", run_dir=str(tmp_path),
                                            preset="debug", max_env_steps=500)
    counter = CounterNode(config)
    counter.register_address("actor/1", "10.0.0.4:4000", 0)
    assert counter.stop_reason("actor/1", 0) is None
    counter.register_address("actor/1", "10.0.0.5:4000", 1)
    assert counter.stop_reason("actor/1", 1) is None
    time.sleep(0.3)
    reason = counter.stop_reason("actor/1", 0)
    assert reason == f"{SUPERSEDED}: actor/1 runs as a newer process (attempt 1; this is attempt 0)"
    assert counter.silent_for(["actor/1"])["actor/1"] >= 0.3  # heard last from attempt 1
    counter.request_stop("max_env_steps")
    assert counter.stop_reason("actor/1", 0).startswith(SUPERSEDED) and counter.stop_reason("actor/1", 1) == "max_env_steps"
    assert counter.stop_reason("counter/0", 0) == counter.stop_reason() == "max_env_steps"  # never registered: never replaced
