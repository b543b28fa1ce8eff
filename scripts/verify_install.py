"""Imports the whole stack, so that a broken install fails at setup, not mid-experiment."""

import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODULES = (
    "tensorflow", "reverb", "launchpad", "jax", "flax", "optax", "chex",
    "orbax.checkpoint", "acme", "dm_control", "matplotlib", "imageio_ffmpeg",
    "agents", "environments", "replay", "launch", "experiments",
)


def main() -> int:
    failed = []
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as error:  # report every broken import, not only the first
            failed.append(f"  {name}: {type(error).__name__}: {error}")
    if failed:
        print("error: these imports failed after install:", *failed, sep="\n", file=sys.stderr)
        print("Rebuild the environment with 'rm -rf .venv && make setup' (see BUILD.md).", file=sys.stderr)
        return 1
    import jax
    import tensorflow as tf

    print(
        f"Stack imports: python {sys.version.split()[0]}, jax {jax.__version__} ({jax.default_backend()}), "
        f"tensorflow {tf.__version__} (CPU build: GPUs visible to TF: {len(tf.config.list_physical_devices('GPU'))})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
