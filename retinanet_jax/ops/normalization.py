"""Image normalisation, done on the device inside jitted steps (the input pipeline ships uint8).

  normalize_images(images uint8 [..., H, W, 3] RGB) -> float32 (x / 255 - mean) / std
ImageNet mean / std as torchvision's detection models use. Input pipelines pad images with
PAD_VALUE, the mean colour, so padding normalises to (about) zero, as torchvision pads.
"""

import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAD_VALUE = tuple(round(255 * m) for m in IMAGENET_MEAN)  # (124, 116, 104)


def normalize_images(images: jax.Array) -> jax.Array:
    """uint8 (or [0, 255] float) RGB [..., 3] -> float32 normalised."""
    x = jnp.asarray(images).astype(jnp.float32) / 255.0
    return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def denormalize_images(images: np.ndarray) -> np.ndarray:
    """Inverse of normalize_images, to uint8 (numpy, for pictures)."""
    x = np.asarray(images, np.float32) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
