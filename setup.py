"""Relay: a JAX actor-learner framework for continuous control with Replay Across Experiments."""

import setuptools

setuptools.setup(
    name="relay-rl",
    version="0.1.0",
    description="JAX actor-learner framework for continuous control (MPO, DMPO, MoG-MPO) with Replay Across Experiments.",
    packages=setuptools.find_packages(include=["agents*", "environments*", "replay*", "launch*", "experiments*"]),
    # Python 3.10 only: dm-launchpad ships wheels for cp310 at most (none for 3.11+), and
    # Launchpad and dm-reverb are built against TensorFlow 2.8, whose wheels stop at 3.10 too.
    # See BUILD.md. agents/ alone also runs on newer Pythons (it imports no TF/Reverb/Launchpad).
    python_requires=">=3.10,<3.11",
    # Exact versions live in requirements/constraints.txt ('make setup' installs with it).
    # The pins kept here are the ones the binary ABI forces: Reverb and Launchpad link
    # TensorFlow 2.8's shared library, so other versions fail at import.
    install_requires=[
        "tensorflow-cpu==2.8.4",
        "dm-reverb==0.7.3",
        "dm-launchpad>=0.5.0,<0.6",
        "dm-acme==0.4.0",
        "jax>=0.4.30",
        "jaxlib>=0.4.30",
        "flax",
        "optax",
        "chex",
        "orbax-checkpoint",
        "numpy>=1.24.1,<2",
        "protobuf<3.20",
        "dm-control",
        "mujoco",
        "dm-env",
        "matplotlib",
        # Its wheel ships an ffmpeg binary: .mp4 videos without a system ffmpeg.
        "imageio-ffmpeg",
        # launch.runtime.entry: the program pickled once for every node process.
        "cloudpickle",
    ],
    extras_require={
        # pytest-xdist: the default test run in two processes (setup.cfg; tests/conftest.py).
        "test": ["pytest", "pytest-timeout", "pytest-xdist"],
    },
)
