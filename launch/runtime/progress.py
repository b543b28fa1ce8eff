"""The launcher's live progress line, read from the program's counter over RPC.

On a terminal one line is redrawn a few times a second; otherwise (a log file, CI)
a plain line is printed every `plain_every_s` seconds. Evaluations are printed as
lines of their own as they land, in both cases.
"""

import os
import socket
import sys
import threading
import time
from typing import Callable, Optional, TextIO

from launch.rundir import summary
from launch.rundir.paths import COORDINATOR_FILE, RunPaths


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def format_progress(progress: dict, latest_eval: Optional[dict]) -> str:
    """'env 12,345/60,000 (185/s) | learner 1,540 (23.1/s) | replay 12,345 | eval 148.2 @ 11,000 | 1:05, ETA 4:30'
    (and '| job 2 of 10' for a SLURM run in its second job)."""
    env_steps, total = progress["env_steps"], progress["max_env_steps"]
    env_rate = progress["env_steps_per_s"]
    parts = [
        f"env {env_steps:,}/{total:,} ({env_rate:,.0f}/s)",
        f"learner {progress['learner_steps']:,} ({progress['learner_steps_per_s']:,.1f}/s)",
        (f"replay {progress['replay_size']:,}" if progress["replay_size"] >= 0 else "replay ?")
        + (f" + {progress['offline_size']:,} RaE" if progress.get("offline_size", -1) >= 0 else ""),
        f"eval {latest_eval['mean_return']:.1f} @ {int(latest_eval['env_steps']):,}" if latest_eval else "eval -",
    ]
    eta = f"ETA {_clock((total - env_steps) / env_rate)}" if env_rate > 0 and env_steps < total else "ETA -"
    parts.append(f"{_clock(progress['elapsed_s'])}, {eta}")
    if progress.get("job"):  # a SLURM run that goes on across jobs
        parts.append("job {} of {}".format(*progress["job"]))
    return " | ".join(parts)


def format_evaluation(row: dict) -> str:
    return (f"eval: learner step {int(row['learner_step']):>7}  env steps {int(row['env_steps']):>8}  "
            f"return {row['mean_return']:8.1f} ± {row['std_return']:.1f}  ({row['wall_time_s']:.0f} s)")


def format_restart(record: dict) -> str:
    """A node's supervisor restarted it, or gave up on it (`launch.runtime.supervisor`), or the
    launcher started a lost supervisor again."""
    if not record.get("restarted"):
        return f"error: {record['message']}"
    if record.get("supervisor"):  # the launcher started a lost supervisor again (launch.runtime.hosts)
        return f"restart: node {record['node']}: {record['cause']}; started again"
    return (f"restart: node {record['node']} died ({record['cause']}) after {record['ran_s']:.1f} s; "
            f"started again ({record['attempt'] + 1})")


def counter_progress(address: str) -> Callable[[], Optional[dict]]:
    """Reads the progress figures from the counter at `address`; None while it does not answer."""
    import courier

    client = courier.Client(address, call_timeout=1.0)

    def fetch() -> Optional[dict]:
        try:
            return client.get_progress()
        except Exception:  # not up yet, or gone with the program
            return None

    return fetch


def show_progress(run_dir: str, fetch_progress: Callable[[], Optional[dict]], done: threading.Event,
                  stream: TextIO = sys.stdout, interactive: Optional[bool] = None, refresh_s: float = 0.25,
                  plain_every_s: float = 10.0) -> None:
    """Shows the run's progress on `stream` until `done` is set: the line from `fetch_progress()`
    (see `counter_progress`), and the evaluator's rows as they land in its metrics file. In a
    log the last line seen is printed once more at the end, so a log always holds one."""
    interactive = stream.isatty() if interactive is None else interactive
    printed_evals, printed_restarts, last_plain, line_shown = 0, 0, time.time(), False
    latest, last_printed = None, None
    while True:
        finished = done.wait(refresh_s)
        rows = summary.evaluations(run_dir)
        progress = fetch_progress()
        latest = progress if progress is not None else latest
        restarts = (latest or {}).get("restarts", [])
        if interactive and line_shown and (len(rows) > printed_evals or len(restarts) > printed_restarts or finished):
            stream.write("\r\033[K")  # clear the progress line so an evaluation line can take its place
            line_shown = False
        for row in rows[printed_evals:]:
            stream.write(format_evaluation(row) + "\n")
        for record in restarts[printed_restarts:]:
            stream.write(format_restart(record) + "\n")
        printed_evals, printed_restarts = len(rows), len(restarts)
        if finished:
            if not interactive and latest is not None:
                line = format_progress(latest, rows[-1] if rows else None)
                if line != last_printed:
                    stream.write(line + "\n")
            stream.flush()
            return
        if progress is not None:
            line = format_progress(progress, rows[-1] if rows else None)
            if interactive:
                stream.write("\r\033[K" + line)
                line_shown = True
            elif time.time() - last_plain >= plain_every_s:
                stream.write(line + "\n")
                last_plain, last_printed = time.time(), line
        stream.flush()


def running_counter(run_dir: str, call_timeout_s: float = 5.0) -> Optional[str]:
    """The address of the run's counter while the run's newest launch goes: the counter its
    launches/<k>/coordinator names answers, as this run's (a killed run's old address may
    serve another program by now). A port nobody listens on is told in a moment; a counter
    busy at the end of its run gets two tries of `call_timeout_s`."""
    launch_dir = RunPaths(run_dir).latest_launch_dir()
    try:
        with open(os.path.join(launch_dir or "", COORDINATOR_FILE)) as file:
            address = file.read().strip()
        host, port = address.rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=2.0).close()
    except (OSError, ValueError):
        return None
    from launch.nodes import rpc

    try:
        progress = rpc.final_client(address, call_timeout_s=call_timeout_s, tries=2).get_progress()
    except Exception:  # gone, or another program's server
        return None
    answered = progress.get("run_dir") if isinstance(progress, dict) else None
    return address if answered and os.path.realpath(answered) == os.path.realpath(run_dir) else None
