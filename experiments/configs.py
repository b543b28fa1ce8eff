"""Experiment configs: per-agent defaults, presets, and `section.field=value` overrides."""

import dataclasses
import typing
from typing import Dict, Sequence

import agents
import environments
from launch.config import ExperimentConfig
from replay.config import ReplayConfig

# Relay's settings for dm_control tasks, under which MPO, DMPO and mixture-critic MPO all
# learn (experiments/results/README.md). From Acme's JAX control-suite baselines
# (examples/baselines/rl_continuous/run_mpo.py, run_dmpo.py, run_mogmpo.py): twice the
# updates per env step, a 3x learning rate, a smaller critic, n = 4.
_CONTROL_SUITE = {
    "learner": {"learning_rate": 3e-4, "epsilon_mean": 0.01, "policy_init_scale": 0.5,
                "critic_layer_sizes": (256, 256, 256)},
    "replay": {"samples_per_insert": 64.0, "n_step": 4},
}

PRESETS: Dict[str, Dict[str, Dict[str, object]]] = {
    "default": _CONTROL_SUITE,
    # The name the defaults had when they were a preset; committed results' commands use it.
    "control": _CONTROL_SUITE,
    # The defaults made cheap for a 2-core CPU (make run): two 256-unit layers for the policy
    # and the critic, batch 128, 10 action samples, still one update per 4 env steps: a cheaper
    # update (`bench learner` measures it) that learns cartpole:swingup about as fast per update
    # (experiments/results/README.md, "make-run-tuning").
    "small": {
        "learner": {**_CONTROL_SUITE["learner"], "policy_layer_sizes": (256, 256), "critic_layer_sizes": (256, 256),
                    "num_samples": 10},
        "replay": {**_CONTROL_SUITE["replay"], "batch_size": 128, "samples_per_insert": 32.0},
    },
    # Acme's MPOConfig and replay settings, verbatim (the dataclasses' own defaults). With
    # them DMPO and mixture-critic MPO stay near 200 on cartpole:swingup at 100k steps.
    "acme": {},
    # From pixels, for an accelerator host: Acme's pixel DMPO example (lp_dmpo_pixels_drqv2.py)
    # and DrQ-v2: 84x84 frames, 3 stacked, action repeat 2, n = 3, one update of 256 per agent
    # step (samples_per_insert 256); the encoder, a 50-unit trunk, then two layers of 1024.
    "pixels": {
        "environment": {"action_repeat": 2, "pixels": environments.PixelConfig(height=84, width=84, frame_stack=3)},
        "learner": {**_CONTROL_SUITE["learner"], "learning_rate": 1e-4, "policy_layer_sizes": (1024, 1024),
                    "critic_layer_sizes": (1024, 1024)},
        "replay": {"n_step": 3, "batch_size": 256, "samples_per_insert": 256.0, "min_size_to_sample": 4000},
    },
    # From pixels on a 2-core CPU: 64x64 frames without shadows (a third of the rendering time),
    # action repeat 4, smaller networks and batches (experiments/results/pixels/).
    "pixels_small": {
        "environment": {"action_repeat": 4,
                        "pixels": environments.PixelConfig(height=64, width=64, frame_stack=3, shadows=False)},
        "learner": {**_CONTROL_SUITE["learner"], "policy_layer_sizes": (256, 256),
                    "critic_layer_sizes": (256, 256), "num_samples": 10},
        "replay": {"n_step": 3, "batch_size": 64, "samples_per_insert": 32.0, "min_size_to_sample": 1000},
    },
    # Shrinks every size so that a whole program runs in seconds (tests, smoke runs).
    "debug": {
        "learner": {"policy_layer_sizes": (32, 32), "critic_layer_sizes": (32, 32), "num_samples": 8},
        "replay": {"min_size_to_sample": 100, "batch_size": 32, "samples_per_insert": 8.0},
        "experiment": {"actor_update_period": 200, "eval_every_learner_steps": 50, "eval_episodes": 1},
    },
}
# "pixels": environment.pixels (setting any of its fields turns pixel observations on);
# "encoder": learner.pixel_encoder.
SECTIONS = ("learner", "head", "replay", "environment", "pixels", "encoder", "experiment")
# Fields that have their own flag (or are whole sections) and so cannot be `--set`.
_SET_ELSEWHERE = {
    "experiment": {"agent": "--agent", "environment": "--set environment.*", "learner": "--set learner.*",
                   "replay": "--set replay.*", "run_dir": "--run_dir", "seed": "--seed",
                   "num_actors": "--num_actors", "envs_per_actor": "--envs_per_actor",
                   "max_env_steps": "--max_env_steps"},
    "environment": {"task": "--env", "seed": "--seed", "pixels": "--set pixels.* (or --preset=pixels)"},
    "learner": {"critic_head": "--agent (and --set head.*)", "pixel_encoder": "--set encoder.*"},
}


def _section_fields(section: str, agent: str):
    # "head" is the critic head of the chosen agent: CategoricalHead for dmpo, MixtureHead for mog.
    cls = {"learner": agents.MPOConfig, "head": agents.AGENT_HEADS.get(agent, agents.ScalarHead),
           "replay": ReplayConfig, "environment": environments.EnvironmentConfig, "pixels": environments.PixelConfig,
           "encoder": agents.PixelEncoderConfig, "experiment": ExperimentConfig}[section]
    hints = typing.get_type_hints(cls)
    return {field.name: hints[field.name] for field in dataclasses.fields(cls)}


def _parse_value(text: str, annotation, name: str):
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union and type(None) in args:  # Optional[X]
        if text.lower() == "none":
            return None
        annotation = next(a for a in args if a is not type(None))
        origin = typing.get_origin(annotation)
    try:
        if annotation is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if origin is tuple:
            return tuple(int(part) for part in text.split(",") if part)
        if annotation in (int, float, str):
            return annotation(text)
    except ValueError:
        raise ValueError(f"--set {name}={text}: not a valid {getattr(annotation, '__name__', annotation)}.") from None
    raise ValueError(f"--set {name}: this field cannot be set from the command line.")


def parse_overrides(assignments: Sequence[str], agent: str = "mpo") -> Dict[str, Dict[str, object]]:
    """["learner.learning_rate=3e-4", ...] -> {"learner": {"learning_rate": 3e-4}, ...}."""
    overrides: Dict[str, Dict[str, object]] = {section: {} for section in SECTIONS}
    for assignment in assignments:
        name, separator, text = assignment.partition("=")
        section, dot, field = name.partition(".")
        if not separator or not dot:
            raise ValueError(f"--set {assignment!r}: expected section.field=value, e.g. learner.learning_rate=3e-4.")
        if section not in SECTIONS:
            raise ValueError(f"--set {assignment!r}: unknown section {section!r}; sections: {', '.join(SECTIONS)}.")
        fields = {k: v for k, v in _section_fields(section, agent).items() if k != "name"}
        if field in _SET_ELSEWHERE.get(section, {}):
            raise ValueError(f"--set {assignment!r}: {section}.{field} is set with {_SET_ELSEWHERE[section][field]}.")
        if field not in fields:
            raise ValueError(f"--set {assignment!r}: {section} has no field {field!r}; fields: {', '.join(sorted(fields))}.")
        overrides[section][field] = _parse_value(text, fields[field], name)
    return overrides


def make_experiment_config(
    agent: str, task: str, run_dir: str, seed: int = 0, num_actors: int = 4, max_env_steps: int = 1_000_000,
    preset: str = "default", overrides: Sequence[str] = (), envs_per_actor: int = 1,
) -> ExperimentConfig:
    """The resolved config; every value is validated here, before anything is launched."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    merged = {section: dict(PRESETS[preset].get(section, {})) for section in SECTIONS}
    if agent not in agents.AGENT_HEADS:
        raise ValueError(f"Unknown agent {agent!r}; choose one of {', '.join(agents.AGENT_HEADS)}.")
    for section, values in parse_overrides(overrides, agent).items():
        merged[section].update(values)
    pixels = merged["environment"].pop("pixels", None)
    if merged["pixels"]:
        pixels = dataclasses.replace(pixels or environments.PixelConfig(), **merged["pixels"])
    environment = environments.EnvironmentConfig(task, seed=seed, pixels=pixels, **merged["environment"])
    if merged["encoder"]:
        merged["learner"]["pixel_encoder"] = dataclasses.replace(
            merged["learner"].get("pixel_encoder", agents.PixelEncoderConfig()), **merged["encoder"])
    experiment = dict(num_actors=num_actors, envs_per_actor=envs_per_actor, max_env_steps=max_env_steps, seed=seed)
    experiment.update(merged["experiment"])
    return ExperimentConfig(
        agent=agent,
        environment=environment,
        run_dir=run_dir,
        learner=agents.make_config(agent, critic_head=agents.AGENT_HEADS[agent](**merged["head"]), **merged["learner"]),
        replay=ReplayConfig(**merged["replay"]),
        **experiment,
    )
