"""A sweep spec (JSON) and the runs it expands to.

    {"max_env_steps": 300000, "num_actors": 2,
     "agents": ["mpo", "dmpo", "mog"], "tasks": ["walker:walk"], "seeds": [0, 1, 2],
     "presets": ["default"], "set": ["replay.batch_size=256"],
     "variants": {"lr3e-4": ["learner.learning_rate=3e-4"]},
     "waves": [{"name": "rae", "seeds": [3, 4, 5], "agents": ["mog"],
                "replay": {"from": ["base"], "match": ["task", "agent"], "ratio": 0.5}}]}

The top level is the first wave, named "base"; each entry of "waves" is a later wave, which
takes any grid field it does not give from the top level and, with "replay", replays the
experience of earlier waves' runs (RaE): those of the named waves whose values of the
"match" fields equal the run's own. Every run is an ordinary run directory,
SWEEP_DIR/<wave>/<task>/<agent>[-<preset>][-<variant>]/seed<k>. Every value is checked,
each run's whole config built, before anything starts.
"""

import dataclasses
import json
import os
import re
from typing import Dict, List, Optional, Tuple

from launch.config import RaEConfig

BASE_WAVE = "base"
_GRID = ("agents", "tasks", "seeds", "presets", "set", "variants", "max_env_steps", "num_actors", "envs_per_actor")
_TOP = _GRID + ("waves",)
_WAVE = _GRID + ("name", "replay")
_REPLAY = ("from", "match", "best", "ratio", "final_ratio", "anneal_steps", "max_steps", "min_return")
_MATCHABLE = ("task", "agent", "preset", "variant")
# Names a sweep directory uses for itself (experiments/sweep/sweep_dir.py), so no wave may take them.
RESERVED_NAMES = ("launcher_logs", "report")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # a wave's or a variant's: a path component of its runs


class SpecError(ValueError):
    """A sweep spec that cannot run: the message names the field and the fix."""


@dataclasses.dataclass(frozen=True)
class Replay:
    """RaE from earlier waves: the runs of `waves` whose `match` fields equal this run's (of those,
    the `best` by final evaluation return, when given), with `--rae_*`'s share, anneal and selection."""

    waves: Tuple[str, ...]
    match: Tuple[str, ...] = ("task",)
    best: Optional[int] = None
    ratio: float = 0.5
    final_ratio: Optional[float] = None
    anneal_steps: int = 0
    max_steps: Optional[int] = None
    min_return: Optional[float] = None

    def train_flags(self, run_dirs: List[str]) -> List[str]:
        """experiments.train's --rae_* flags for replaying `run_dirs`."""
        flags = [f"--rae_from={','.join(run_dirs)}", f"--rae_ratio={self.ratio}"]
        if self.final_ratio is not None:
            flags += [f"--rae_final_ratio={self.final_ratio}", f"--rae_anneal_steps={self.anneal_steps}"]
        if self.max_steps is not None:
            flags.append(f"--rae_max_steps={self.max_steps}")
        if self.min_return is not None:
            flags.append(f"--rae_min_return={self.min_return}")
        return flags


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One run of the sweep: where it goes and the arguments of `experiments.train` it gets."""

    wave: str
    name: str  # <task>/<agent>[-<preset>][-<variant>]/seed<k>, unique within its wave
    agent: str
    task: str
    seed: int
    preset: str
    variant: Optional[str]
    overrides: Tuple[str, ...]
    max_env_steps: int
    num_actors: int
    envs_per_actor: int
    replay: Optional[Replay] = None

    def run_dir(self, sweep_dir: str) -> str:
        return os.path.join(sweep_dir, self.wave, self.name)

    def matches(self, other: "PlannedRun", fields: Tuple[str, ...]) -> bool:
        return all(getattr(self, field) == getattr(other, field) for field in fields)


def _fail(where: str, message: str) -> None:
    raise SpecError(f"sweep spec, {where}: {message}")


def _unknown(fields: dict, known: Tuple[str, ...], where: str) -> None:
    extra = sorted(set(fields) - set(known))
    if extra:
        _fail(where, f"unknown field{'s' if len(extra) > 1 else ''} {', '.join(extra)}; the fields are "
                     f"{', '.join(known)}.")


def _list(value, where: str, kind=str) -> list:
    if not isinstance(value, list) or not value or not all(isinstance(item, kind) for item in value):
        _fail(where, f"give a non-empty list of {kind.__name__}s, got {value!r}.")
    return value


def _replay(fields: dict, earlier: List[str], where: str) -> Replay:
    _unknown(fields, _REPLAY, where)
    waves = _list(fields.get("from"), f"{where}.from")
    missing = [wave for wave in waves if wave not in earlier]
    if missing:
        _fail(f"{where}.from", f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not an earlier wave; "
                               f"a wave replays only waves before it ({', '.join(earlier)}).")
    match = tuple(_list(fields.get("match", ["task"]), f"{where}.match"))
    if not set(match) <= set(_MATCHABLE) or "task" not in match:
        _fail(f"{where}.match", f"choose from {', '.join(_MATCHABLE)}, with task among them (RaE replays runs of "
                                f"the same task), got {list(match)}.")
    best = fields.get("best")
    if best is not None and (not isinstance(best, int) or isinstance(best, bool) or best < 1):
        _fail(f"{where}.best", f"give how many of the matching runs to replay, those with the highest final "
                               f"return, as a positive integer, got {best!r}.")
    try:
        replay = Replay(tuple(waves), match, best, float(fields.get("ratio", 0.5)), fields.get("final_ratio"),
                        int(fields.get("anneal_steps", 0)), fields.get("max_steps"), fields.get("min_return"))
        # The checks of --rae_ratio, --rae_final_ratio, --rae_anneal_steps and the selection's flags.
        RaEConfig(runs=waves, ratio=replay.ratio, final_ratio=replay.final_ratio,
                  anneal_learner_steps=replay.anneal_steps, max_steps=replay.max_steps, min_return=replay.min_return)
    except (TypeError, ValueError) as error:
        _fail(where, str(error))
    return replay


def _wave_runs(wave: str, fields: dict, replay: Optional[Replay], where: str) -> List[PlannedRun]:
    for field in ("max_env_steps", "num_actors", "envs_per_actor"):
        value = fields.get(field, 1)
        if field == "max_env_steps" and field not in fields:
            _fail(where, "give max_env_steps, the step budget of every run.")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            _fail(f"{where}.{field}", f"give a positive integer, got {value!r}.")
    variants: Dict[str, List[str]] = fields.get("variants") or {None: []}
    if not isinstance(variants, dict) or not all(isinstance(v, list) for v in variants.values()):
        _fail(f"{where}.variants", f"give a mapping of variant names to lists of overrides, got {variants!r}.")
    bad_names = [name for name in variants if name is not None and not _NAME.fullmatch(name)]
    if bad_names:
        _fail(f"{where}.variants", f"name each variant with letters, digits, _ and -, got {bad_names}.")
    runs = []
    for task in _list(fields.get("tasks"), f"{where}.tasks"):
        for agent in _list(fields.get("agents"), f"{where}.agents"):
            for preset in _list(fields.get("presets", ["default"]), f"{where}.presets"):
                for variant, variant_overrides in variants.items():
                    for seed in _list(fields.get("seeds"), f"{where}.seeds", int):
                        label = agent + ("" if preset == "default" else f"-{preset}") + (f"-{variant}" if variant else "")
                        runs.append(PlannedRun(
                            wave, f"{task.replace(':', '_')}/{label}/seed{seed}", agent, task, seed, preset, variant,
                            tuple(fields.get("set", [])) + tuple(variant_overrides), int(fields["max_env_steps"]),
                            int(fields.get("num_actors", 2)), int(fields.get("envs_per_actor", 1)), replay))
    from experiments import configs  # agents and JAX: only once a spec is read

    for run in runs:  # the whole config of each run, as experiments.train builds it
        try:
            configs.make_experiment_config(agent=run.agent, task=run.task, run_dir="/nonexistent", seed=run.seed,
                                           num_actors=run.num_actors, envs_per_actor=run.envs_per_actor,
                                           max_env_steps=run.max_env_steps, preset=run.preset,
                                           overrides=run.overrides)
        except ValueError as error:
            _fail(f"run {run.wave}/{run.name}", str(error))
    return runs


def load_spec(path: str) -> List[PlannedRun]:
    """The runs of the spec at `path`, in waves' order; SpecError, naming what is wrong, if any is
    bad (an unknown agent, task or field, a wave that names no earlier one, a run that replays
    nothing)."""
    try:
        with open(path) as file:
            spec = json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        raise SpecError(f"sweep spec {path}: {error}") from None
    if not isinstance(spec, dict):
        _fail(path, "give a JSON object.")
    return expand(spec)


def expand(spec: dict) -> List[PlannedRun]:
    _unknown(spec, _TOP, "top level")
    runs = _wave_runs(BASE_WAVE, spec, None, "top level")
    names = [BASE_WAVE]
    for index, wave in enumerate(spec.get("waves", [])):
        where = f"waves[{index}]"
        if not isinstance(wave, dict):
            _fail(where, "give a JSON object.")
        _unknown(wave, _WAVE, where)
        name = wave.get("name")
        if (not isinstance(name, str) or not _NAME.fullmatch(name) or name in names
                or name in RESERVED_NAMES):
            _fail(f"{where}.name", f"give each wave a name of its own (letters, digits, _ and -; not "
                                   f"{', '.join((BASE_WAVE,) + RESERVED_NAMES)}), got {name!r}.")
        replay = _replay(wave["replay"], names, f"{where}.replay") if "replay" in wave else None
        fields = {**{key: value for key, value in spec.items() if key in _GRID}, **wave}
        wave_runs = _wave_runs(name, fields, replay, where)
        if replay is not None:
            for run in wave_runs:
                matching = sources(run, runs)
                if not matching:
                    _fail(f"{where}.replay", f"run {name}/{run.name} would replay nothing: no run of "
                                             f"{', '.join(replay.waves)} has its {', '.join(replay.match)}.")
                if replay.best is not None and replay.best > len(matching):
                    _fail(f"{where}.replay.best", f"run {name}/{run.name} has {len(matching)} matching runs, "
                                                  f"fewer than best={replay.best}.")
        runs += wave_runs
        names.append(name)
    seen = {}
    for run in runs:  # a seed given twice, or a preset and a variant of the same name
        if (run.wave, run.name) in seen:
            _fail(f"wave {run.wave}", f"two runs would share the directory {run.wave}/{run.name}; give each seed "
                                      "once, and no variant a preset's name.")
        seen[(run.wave, run.name)] = run
    return runs


def sources(run: PlannedRun, runs: List[PlannedRun]) -> List[PlannedRun]:
    """The earlier runs `run` may replay (none without `replay`): all those that match; with
    `replay.best`, the sweep chooses among them once they have finished."""
    if run.replay is None:
        return []
    return [other for other in runs if other.wave in run.replay.waves and run.matches(other, run.replay.match)]


def select_runs(runs: List[PlannedRun], patterns: List[str]) -> List[PlannedRun]:
    """The runs that any of `patterns` names, in the spec's order. A pattern is a run's path in its
    sweep, <wave>/<task>/<label>/seed<k>, or its first components (a wave, a task of a wave...),
    each component a shell pattern ("agents/*/dmpo-small", "*/*/*/seed1"). SpecError for a
    pattern that names no run, listing the sweep's waves."""
    from fnmatch import fnmatchcase

    def named(run: PlannedRun, pattern: str) -> bool:
        wanted = pattern.strip("/").split("/")
        path = f"{run.wave}/{run.name}".split("/")
        return len(wanted) <= len(path) and all(fnmatchcase(part, want) for part, want in zip(path, wanted))

    unmatched = [pattern for pattern in patterns if not any(named(run, pattern) for run in runs)]
    if unmatched:
        waves = ", ".join(dict.fromkeys(run.wave for run in runs))
        _fail("--only", f"{', '.join(unmatched)} names no run of this sweep; give <wave>[/<task>[/<label>"
                        f"[/seed<k>]]], e.g. {runs[0].wave}/{runs[0].name} (its waves: {waves}).")
    return [run for run in runs if any(named(run, pattern) for pattern in patterns)]
