"""experiments.sweep report: a sweep's results as a table and figures.

    report/table.csv, table.md   a row per wave, task and agent (with preset and variant): its
                                 finished seeds' final and best evaluation return (mean, min-max,
                                 95% bootstrap interval of the mean), env steps, wall time
    report/rae.csv               each replaying group beside its scratch group: env steps to 90%
                                 of scratch's mean final return, and final returns
    report/curves_<task>.png     mean and min-max band of each group's curves, published figures
    report/report.json           all of it, and every run's own figures

With `--with=EARLIER/report.json`, a run of the sweep that has no directory here takes its record
from that earlier report of the same spec, if it had finished there: results of runs made
elsewhere (another machine, a cluster, a sweep directory since lost) joined with those made here.
"""

import csv
import json
import os
import statistics
from typing import Dict, List, Optional, Tuple

from experiments import published
from experiments.curves import bootstrap_interval, first_reaching, mean_band
from experiments.sweep.spec import PlannedRun
from experiments.sweep.state import FINISHED, NEW, run_status
from experiments.sweep.sweep_dir import SweepDir
from launch.rundir import plots, summary
from launch.rundir.jsonio import read_json
from launch.rundir.paths import COUNTER_STATE_FILE, RunPaths

THRESHOLD_SHARE = 0.9  # of scratch's final return: the env steps to reach it measure what replay saved


def label_of(run: PlannedRun) -> str:
    """agent[-preset][-variant]: the part of a run's name between its task and its seed."""
    return run.name.split("/")[1]


def wall_time_s(run_dir: str) -> Optional[float]:
    """The run's wall time over all its launches: each launch from its counter's start to the
    counter's last save of its state (every 0.5 s while it runs, and at its stop), so a launch
    that was killed counts to its end too. None for a run without them (made before them)."""
    total, found = 0.0, False
    launches = os.path.join(run_dir, "launches")
    for name in os.listdir(launches) if os.path.isdir(launches) else []:
        path = os.path.join(launches, name, COUNTER_STATE_FILE)
        state = read_json(path) if os.path.isfile(path) else None
        if state and state.get("started_at"):
            total += max(0.0, os.path.getmtime(path) - state["started_at"])
            found = True
    return total if found else None


def run_record(sweep: SweepDir, run: PlannedRun) -> dict:
    run_dir = sweep.run_dir(run)
    status = run_status(sweep, run, probe=False)
    result = read_json(RunPaths(run_dir).summary) or {}
    rows = summary.evaluations(run_dir) if os.path.isdir(run_dir) else []
    config = read_json(RunPaths(run_dir).config) or {}
    rae = config.get("rae") or {}
    return {"wave": run.wave, "task": run.task, "label": label_of(run), "seed": run.seed, "state": status.state,
            "run_dir": os.path.relpath(run_dir, sweep.root), "env_steps": result.get("env_steps"),
            "final_return": result.get("final_eval_return"), "best_return": result.get("best_eval_return"),
            "wall_time_s": wall_time_s(run_dir), "evaluations": len(rows), "max_env_steps": run.max_env_steps,
            "replays": [os.path.relpath(path, sweep.root) for path in rae.get("runs", [])],
            "replaying": run.replay is not None, "rae_ratio": run.replay.ratio if run.replay else None,
            "curve": [(int(row["env_steps"]), float(row["mean_return"])) for row in rows]}


def _stats(values: List[Optional[float]]) -> dict:
    """Mean, min, max and bootstrap interval of the values there are (a run without an
    evaluation has None: `n` says how many counted)."""
    values = [value for value in values if value is not None]
    if not values:
        return {"n": 0, "mean": None, "min": None, "max": None, "ci_low": None, "ci_high": None}
    low, high = bootstrap_interval(values)
    return {"n": len(values), "mean": statistics.mean(values), "min": min(values), "max": max(values),
            "ci_low": low, "ci_high": high}


def groups(records: List[dict]) -> Dict[Tuple[str, str, str], List[dict]]:
    """(wave, task, label) -> its runs, in the spec's order."""
    grouped: Dict[Tuple[str, str, str], List[dict]] = {}
    for record in records:
        grouped.setdefault((record["wave"], record["task"], record["label"]), []).append(record)
    return grouped


def group_row(key: Tuple[str, str, str], runs: List[dict]) -> dict:
    finished = [run for run in runs if run["state"] == FINISHED]
    replayed = [run for run in runs if run["replays"]]
    return {"wave": key[0], "task": key[1], "agent": key[2], "seeds": " ".join(str(run["seed"]) for run in runs),
            "finished": len(finished), "runs": len(runs),
            "replays": (f"{len(replayed[0]['replays'])} runs at {replayed[0]['rae_ratio']:g}" if replayed else
                        "yes, none started" if runs[0]["replaying"] else ""),
            "final": _stats([run["final_return"] for run in finished]),
            "best": _stats([run["best_return"] for run in finished]),
            "env_steps": _stats([run["env_steps"] for run in finished])["mean"],
            "wall_time_s": _stats([run["wall_time_s"] for run in finished])["mean"]}


def _scratch_for(key, grouped) -> Optional[Tuple[str, str, str]]:
    """The group a replaying group is measured against: the same task and agent from scratch, with
    the same seeds if a wave has them (else any wave without replay)."""
    wave, task, label = key
    seeds = {run["seed"] for run in grouped[key]}
    candidates = [other for other, runs in grouped.items()
                  if other[1:] == (task, label) and not runs[0]["replaying"]]
    same_seeds = [other for other in candidates if {run["seed"] for run in grouped[other]} == seeds]
    return (same_seeds or candidates or [None])[0]


def rae_rows(grouped) -> List[dict]:
    rows = []
    for key, runs in grouped.items():
        if not runs[0]["replaying"]:
            continue
        scratch_key = _scratch_for(key, grouped)
        scratch = [run for run in grouped.get(scratch_key, []) if run["state"] == FINISHED]
        replaying = [run for run in runs if run["state"] == FINISHED]
        if not scratch or not replaying:
            continue
        scratch_final = _stats([run["final_return"] for run in scratch])["mean"]
        if scratch_final is None:
            continue
        threshold = THRESHOLD_SHARE * scratch_final
        row = {"wave": key[0], "task": key[1], "agent": key[2], "scratch_wave": scratch_key[0],
               "threshold": threshold}
        for name, members in (("rae", replaying), ("scratch", scratch)):
            reached = [first_reaching([{"env_steps": s, "mean_return": r} for s, r in run["curve"]], threshold)
                       for run in members]
            # A seed that never reached it counts at its budget: the mean is a lower bound then,
            # never a mean of the fast seeds alone.
            steps = [run["max_env_steps"] if value is None else value for value, run in zip(reached, members)]
            row[name] = {"seeds": [run["seed"] for run in members],
                         "reached": f"{sum(value is not None for value in reached)} of {len(members)}",
                         "env_steps_to_threshold": reached, "to_threshold": _stats(steps),
                         "final": _stats([run["final_return"] for run in members])}
        rows.append(row)
    return rows


def _cell(stats: dict, digits: int = 1) -> str:
    if stats["mean"] is None:
        return "-"
    return (f"{stats['mean']:,.{digits}f} [{stats['ci_low']:,.{digits}f}, {stats['ci_high']:,.{digits}f}] "
            f"({stats['min']:,.{digits}f}-{stats['max']:,.{digits}f})")


def _markdown(table: List[dict], rae: List[dict]) -> str:
    lines = ["Return: mean over finished seeds [95% bootstrap interval of the mean] (min-max).", "",
             "| wave | task | agent | seeds (finished) | final return | best return | env steps | wall time |",
             "|---|---|---|---|---|---|---|---|"]
    for row in table:
        wall = ("-" if row["wall_time_s"] is None else f"{row['wall_time_s']:,.0f} s" if row["wall_time_s"] < 120
                else f"{row['wall_time_s'] / 60:,.0f} min")
        steps = f"{row['env_steps']:,.0f}" if row["env_steps"] is not None else "-"
        lines.append(f"| {row['wave']}{' (replays ' + row['replays'] + ')' if row['replays'] else ''} | {row['task']} "
                     f"| {row['agent']} | {row['seeds']} ({row['finished']}/{row['runs']}) | {_cell(row['final'])} "
                     f"| {_cell(row['best'])} | {steps} | {wall} |")
    if rae:
        lines += ["", f"Replay against scratch: env steps to {THRESHOLD_SHARE:.0%} of scratch's mean final return "
                      "(a seed that never reached it counted at its budget).", "",
                  "| wave | task | agent | threshold | env steps to it, replay (reached) | scratch (reached) "
                  "| final return, replay | scratch |", "|---|---|---|---|---|---|---|---|"]
        for row in rae:
            lines.append(f"| {row['wave']} vs {row['scratch_wave']} | {row['task']} | {row['agent']} "
                         f"| {row['threshold']:.1f} | {_cell(row['rae']['to_threshold'], 0)} ({row['rae']['reached']}) "
                         f"| {_cell(row['scratch']['to_threshold'], 0)} ({row['scratch']['reached']}) "
                         f"| {_cell(row['rae']['final'])} | {_cell(row['scratch']['final'])} |")
    return "\n".join(lines) + "\n"


def _flat(row: dict) -> dict:
    flat = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{inner}": item for inner, item in value.items()
                         if not isinstance(item, (dict, list))})
            for inner, item in value.items():
                if isinstance(item, dict):
                    flat.update({f"{key}_{inner}_{k}": v for k, v in item.items()})
        elif not isinstance(value, list):
            flat[key] = value
    return flat


def _write_csv(path: str, rows: List[dict]) -> None:
    flat = [_flat(row) for row in rows]
    fields = list(dict.fromkeys(field for row in flat for field in row))
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(flat)


def drawn_runs(runs: List[dict]) -> Tuple[List[dict], int]:
    """The runs of a group whose curves its band is drawn from, and how many are left out: the
    finished ones while others go (a band ends where its shortest curve does, so one run just
    started would cut it to a dot), else those with a curve."""
    with_curves = [run for run in runs if run["curve"]]
    finished = [run for run in with_curves if run["state"] == FINISHED]
    drawn = finished or with_curves
    return drawn, len(with_curves) - len(drawn)


def _figures(grouped, out: str) -> List[str]:
    written = []
    for task in dict.fromkeys(key[1] for key in grouped):
        curves, bands = {}, {}
        for key, runs in grouped.items():
            drawn, going = drawn_runs([run for run in runs if key[1] == task])
            if not drawn:
                continue
            steps, mean, low, high = mean_band([tuple(zip(*run["curve"])) for run in drawn])
            label = (f"{key[0]}: {key[2]} ({len(drawn)} seed{'s' if len(drawn) > 1 else ''}"
                     + (f"; {going} going, not drawn" if going else "") + ")")
            curves[label], bands[label] = (steps, mean), (steps, low, high)
        if not curves:
            continue
        path = os.path.join(out, f"curves_{task.replace(':', '_')}.png")
        plots.plot_learning_curves(curves, path, title=f"{task}: mean and min-max across seeds",
                                   reference=published.reference_lines(task), bands=bands)
        written.append(path)
    return written


def with_earlier(records: List[dict], runs: List[PlannedRun], earlier: str) -> List[dict]:
    """`records`, those of runs with no directory here replaced by the earlier report's record of
    the same run if it had finished there (marked `reported_in`); ValueError if `earlier` is not
    a report, or records the run with another seed, label or step budget (another spec)."""
    report = read_json(earlier)
    if not isinstance(report, dict) or not isinstance(report.get("runs"), list):
        raise ValueError(f"--with={earlier} is not a sweep report; give the report.json that "
                         f"python -m experiments.sweep report wrote.")
    reported = {record["run_dir"]: record for record in report["runs"]}
    joined = []
    for run, record in zip(runs, records):
        old = reported.get(record["run_dir"])
        if record["state"] == NEW and old is not None and old["state"] == FINISHED:
            if (old["seed"], old["max_env_steps"], old["label"]) != (run.seed, run.max_env_steps, label_of(run)):
                raise ValueError(f"--with={earlier}: its run {old['run_dir']} has seed {old['seed']}, "
                                 f"{old['max_env_steps']:,} env steps and {old['label']}, this sweep's "
                                 f"{run.seed}, {run.max_env_steps:,} and {label_of(run)}: not the same run.")
            record = dict(old, reported_in=earlier)
        joined.append(record)
    return joined


def write_report(sweep: SweepDir, runs: List[PlannedRun], out: str, earlier: Optional[str] = None) -> List[str]:
    """Writes the report's files under `out` (with `earlier`'s records of the runs not here); their paths."""
    records = [run_record(sweep, run) for run in runs]
    if earlier:
        records = with_earlier(records, runs, earlier)
    grouped = groups(records)
    table = [group_row(key, members) for key, members in grouped.items()]
    rae = rae_rows(grouped)
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, name) for name in ("table.csv", "table.md", "report.json")]
    _write_csv(paths[0], table)
    borrowed = sum("reported_in" in record for record in records)
    with open(paths[1], "w") as file:
        file.write(_markdown(table, rae) + (f"\n{borrowed} of the {len(records)} runs' figures come from "
                                            f"{earlier}; their directories are not in this sweep.\n"
                                            if borrowed else ""))
    with open(paths[2], "w") as file:
        json.dump({"sweep": sweep.root, "with": earlier, "table": table, "rae": rae, "runs": records}, file,
                  indent=2)
    if rae:
        paths.append(os.path.join(out, "rae.csv"))
        _write_csv(paths[-1], rae)
    return paths + _figures(grouped, out)
