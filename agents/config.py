"""Hyperparameters of the MPO learners, as frozen dataclasses that validate themselves.

MPO, DMPO and mixture-critic MPO are one learner; they differ only in the critic's
head. `make_config("mpo" | "dmpo" | "mog", **overrides)` gives each one's defaults.
"""

import dataclasses
from typing import Optional, Tuple, Union


def _require(condition: bool, message: str):
    if not condition:
        raise ValueError(message)


@dataclasses.dataclass(frozen=True)
class ScalarHead:
    """Plain MPO: the critic predicts Q(s, a) directly."""

    name: str = "scalar"


@dataclasses.dataclass(frozen=True)
class CategoricalHead:
    """DMPO: a categorical distribution over `num_atoms` fixed atoms in [v_min, v_max]."""

    num_atoms: int = 51
    # Suite rewards are in [0, 1]; with discount 0.99 returns stay below 100.
    v_min: float = -150.0
    v_max: float = 150.0
    name: str = "categorical"

    def __post_init__(self):
        _require(self.num_atoms >= 2, f"CategoricalHead.num_atoms must be >= 2, got {self.num_atoms}.")
        _require(self.v_min < self.v_max, f"CategoricalHead needs v_min < v_max, got {self.v_min} >= {self.v_max}.")


@dataclasses.dataclass(frozen=True)
class MixtureHead:
    """A mixture of `num_components` Gaussians, trained by sample-based cross-entropy.

    Shahriari et al. 2022, "Revisiting Gaussian mixture critics in off-policy RL".
    """

    num_components: int = 5
    # Initial component stddevs, and the unit in which they grow (stddev =
    # init_scale * softplus(raw) / softplus(0), as Acme's): they widen only slowly, so
    # early on the likelihood moves the means to the targets rather than widening.
    init_scale: float = 1e-3
    # Return samples drawn from the target critic at each of the N target-policy
    # actions (Acme's policy_eval_num_val_samples): N x this many targets per transition.
    num_value_samples: int = 4
    name: str = "mixture"

    def __post_init__(self):
        _require(self.num_components >= 1, f"MixtureHead.num_components must be >= 1, got {self.num_components}.")
        _require(self.init_scale > 0, f"MixtureHead.init_scale must be > 0, got {self.init_scale}.")
        _require(self.num_value_samples >= 1,
                 f"MixtureHead.num_value_samples must be >= 1, got {self.num_value_samples}.")


CriticHead = Union[ScalarHead, CategoricalHead, MixtureHead]


@dataclasses.dataclass(frozen=True)
class PixelEncoderConfig:
    """The convolutional encoder of frame-stack observations (used only when observations are pixels).

    The DrQ-v2 torso, as Acme's pixel DMPO uses it: 3x3 convolutions of `channels` channels
    with these strides, unpadded, ReLU, flattened. Then each network has a trunk of its own
    (a linear of `features` units, LayerNorm, tanh) before its torso (layer_sizes); the
    critic's runs once per observation, before the N sampled actions join.
    """

    channels: int = 32
    strides: Tuple[int, ...] = (2, 1, 1, 1)  # one convolution per entry
    kernel_size: int = 3
    features: int = 50
    # True: one encoder, trained by the critic loss only; the policy reads its features with
    # the gradient stopped (Acme's pixel DMPO, DrQ-v2). False: the policy has an encoder of
    # its own, trained by the policy loss.
    shared: bool = True
    # DrQ's random shift, in the learner step: each image is padded by this many pixels
    # (repeating its edge) and cropped back at a random offset. 0 turns it off.
    random_shift_pad: int = 4

    def __post_init__(self):
        _require(self.channels >= 1, f"PixelEncoderConfig.channels must be >= 1, got {self.channels}.")
        _require(len(self.strides) >= 1 and all(isinstance(s, int) and s >= 1 for s in self.strides),
                 f"PixelEncoderConfig.strides must be a non-empty tuple of ints >= 1, got {self.strides!r}.")
        _require(self.kernel_size >= 1, f"PixelEncoderConfig.kernel_size must be >= 1, got {self.kernel_size}.")
        _require(self.features >= 1, f"PixelEncoderConfig.features must be >= 1, got {self.features}.")
        _require(self.random_shift_pad >= 0,
                 f"PixelEncoderConfig.random_shift_pad must be >= 0 (0: no augmentation), got {self.random_shift_pad}.")


@dataclasses.dataclass(frozen=True)
class MPOConfig:
    """Everything the MPO learner needs; defaults follow Acme's MPO."""

    critic_head: CriticHead = ScalarHead()
    # Networks.
    policy_layer_sizes: Tuple[int, ...] = (256, 256, 256)
    critic_layer_sizes: Tuple[int, ...] = (512, 512, 256)
    # Initial policy stddev, and its floor.
    policy_init_scale: float = 0.7
    policy_min_scale: float = 1e-6
    # Actions sampled from the target policy per state, for the E-step and the critic target.
    num_samples: int = 20
    # Where the policy is improved: "next" reuses the critic's bootstrap pass at the
    # next observations (one target-critic pass over B x N actions per step, as Acme's
    # TF MPO/DMPO); "current" evaluates N fresh actions at the batch's observations
    # and improves the policy there only (a second pass). Acme's JAX MPO does neither
    # alone: it improves the policy at both, its next-observation samples shared with
    # the bootstrap.
    policy_states: str = "next"
    # E-step KL bound (temperature dual) and the M-step's per-dimension KL bounds.
    epsilon: float = 0.1
    epsilon_mean: float = 0.0025
    epsilon_stddev: float = 1e-6
    # MO-MPO action penalization: a second objective pulling actions into [-1, 1].
    action_penalization: bool = True
    epsilon_penalty: float = 0.001
    # Initial dual values (kept positive by a softplus; floored at ~1e-8).
    init_temperature: float = 10.0
    init_alpha_mean: float = 10.0
    init_alpha_stddev: float = 1000.0
    # Optimisation.
    learning_rate: float = 1e-4
    dual_learning_rate: float = 1e-2
    grad_norm_clip: float = 40.0
    # Target networks: copied every `target_update_period` steps, or, if
    # `target_update_rate` is set, moved towards the online ones by that rate each step.
    target_update_period: int = 100
    target_update_rate: Optional[float] = None
    # Only for pixel observations: the encoder in front of both networks.
    pixel_encoder: PixelEncoderConfig = PixelEncoderConfig()

    def __post_init__(self):
        _require(
            isinstance(self.critic_head, (ScalarHead, CategoricalHead, MixtureHead)),
            f"MPOConfig.critic_head must be ScalarHead, CategoricalHead or MixtureHead, got {self.critic_head!r}.",
        )
        for name in ("policy_layer_sizes", "critic_layer_sizes"):
            sizes = getattr(self, name)
            _require(
                len(sizes) >= 1 and all(isinstance(s, int) and s > 0 for s in sizes),
                f"MPOConfig.{name} must be a non-empty tuple of positive ints, got {sizes!r}.",
            )
        _require(self.num_samples >= 2, f"MPOConfig.num_samples must be >= 2, got {self.num_samples}.")
        _require(
            self.policy_states in ("next", "current"),
            f"MPOConfig.policy_states must be 'next' or 'current', got {self.policy_states!r}.",
        )
        for name in ("epsilon", "epsilon_mean", "epsilon_stddev", "epsilon_penalty", "init_temperature",
                     "init_alpha_mean", "init_alpha_stddev", "learning_rate", "dual_learning_rate",
                     "grad_norm_clip", "policy_init_scale"):
            _require(getattr(self, name) > 0, f"MPOConfig.{name} must be > 0, got {getattr(self, name)}.")
        _require(self.policy_min_scale >= 0, f"MPOConfig.policy_min_scale must be >= 0, got {self.policy_min_scale}.")
        _require(
            self.target_update_period >= 1,
            f"MPOConfig.target_update_period must be >= 1, got {self.target_update_period}.",
        )
        _require(
            self.target_update_rate is None or 0 < self.target_update_rate <= 1,
            f"MPOConfig.target_update_rate must be None or in (0, 1], got {self.target_update_rate}.",
        )


AGENT_HEADS = {"mpo": ScalarHead, "dmpo": CategoricalHead, "mog": MixtureHead}


def make_config(agent: str, **overrides) -> MPOConfig:
    """The default config of `agent` ("mpo", "dmpo" or "mog"), with `overrides` applied."""
    if agent not in AGENT_HEADS:
        raise ValueError(f"Unknown agent {agent!r}; choose one of {', '.join(AGENT_HEADS)}.")
    overrides.setdefault("critic_head", AGENT_HEADS[agent]())
    return MPOConfig(**overrides)
