"""DrQ's random-shift augmentation of image batches, on the device, in uint8.

Each image is padded by `pad` pixels that repeat its edge, then cropped back to its
size at an offset drawn uniformly from [0, 2 pad] in each direction: the content moves
by up to `pad` pixels. The S frames of one stacked observation move together.
"""

import jax
import jax.numpy as jnp


def shift_images(images: jax.Array, offsets: jax.Array, pad: int) -> jax.Array:
    """images [B, ..., H, W, C], offsets int [B, 2] in [0, 2 pad]: image b's output pixel (i, j)
    is its input pixel (i + dy - pad, j + dx - pad), (dy, dx) = offsets[b], clamped to the image."""

    def shift_one(image, offset):  # [..., H, W, C], [2]
        lead = image.ndim - 3
        padded = jnp.pad(image, [(0, 0)] * lead + [(pad, pad), (pad, pad), (0, 0)], mode="edge")
        start = [0] * lead + [offset[0], offset[1], 0]
        return jax.lax.dynamic_slice(padded, start, image.shape)

    return jax.vmap(shift_one)(images, offsets)


def random_shift(images: jax.Array, key: jax.Array, pad: int) -> jax.Array:
    """Each of the B images [B, ..., H, W, C] shifted by its own random offset."""
    offsets = jax.random.randint(key, (images.shape[0], 2), 0, 2 * pad + 1)
    return shift_images(images, offsets, pad)
