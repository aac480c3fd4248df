"""Benchmark inputs: a deterministic synthetic street-like image, or user-supplied images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from nanodet_infer.errors import ImageReadError

SYNTHETIC_SIZE = (1280, 720)  # (W, H), a 720p camera frame
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def synthetic_image(size: tuple[int, int] = SYNTHETIC_SIZE, seed: int = 0) -> np.ndarray:
    """A seeded BGR uint8 image ``[H, W, 3]``: a gradient, 40 filled shapes and sensor-like noise.

    Identical for identical ``(size, seed)`` on every machine (numpy's PCG64 and cv2's drawing).
    """
    width, height = size
    rng = np.random.default_rng(seed)
    ramp_x = np.linspace(40, 200, width, dtype=np.float32)[None, :]
    ramp_y = np.linspace(60, 160, height, dtype=np.float32)[:, None]
    image = np.stack([ramp_x + 0 * ramp_y, ramp_y + 0 * ramp_x, (ramp_x + ramp_y) / 2], axis=-1).astype(np.uint8)
    for _ in range(40):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        extent = int(rng.integers(height // 20, height // 4))
        if rng.random() < 0.5:
            cv2.rectangle(image, (x, y), (x + extent, y + int(extent * rng.uniform(0.5, 2.0))), colour, -1)
        else:
            cv2.circle(image, (x, y), extent // 2, colour, -1)
    noise = rng.normal(0.0, 6.0, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def load_images(path: Path) -> list[np.ndarray]:
    """The images of a file or a folder (sorted by name), as BGR uint8 arrays."""
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
    images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in files]
    if not images or any(image is None for image in images):
        raise ImageReadError(f"no readable image at {path}")
    return images
