"""A deterministic ImageNet-style image set built from photos that ship inside installed packages
(scikit-image's `skimage.data`, scikit-learn's `load_sample_images`): nothing is downloaded.

For calibrating and checking int8 models of real-weight CNNs (EfficientNet-Lite0): random resized crops
and horizontal flips of ~14 photos, drawn by a seeded numpy RNG, so one seed always gives the same array.
Different seeds give different crops of the same photos; pass `names` to keep photos apart instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image

from compress.zoo.efficientnet_lite import MEAN, STD

# Files inside the scikit-image wheel (no pooch download); grey ones are repeated over 3 channels.
SKIMAGE_PHOTOS: tuple[str, ...] = (
    "astronaut", "chelsea", "coffee", "rocket", "motorcycle", "retina", "hubble_deep_field",
    "immunohistochemistry", "camera", "brick", "grass", "gravel",
)
SKLEARN_PHOTOS: tuple[str, ...] = ("china", "flower")
PHOTOS: tuple[str, ...] = SKIMAGE_PHOTOS + SKLEARN_PHOTOS


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


@lru_cache(maxsize=1)
def _all_photos() -> dict[str, np.ndarray]:
    try:
        from skimage import data
    except ImportError as exc:
        raise ImportError("the sample photos need scikit-image: pip install scikit-image") from exc
    photos: dict[str, np.ndarray] = {}
    for name in SKIMAGE_PHOTOS:
        # stereo_motorcycle() is (left, right, disparity): the left view is the photo.
        photos[name] = _rgb(data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)())
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:  # optional: two more photos when scikit-learn is there
        return photos
    for name, image in zip(SKLEARN_PHOTOS, load_sample_images().images, strict=True):
        photos[name] = _rgb(image)
    return photos


def load_photos(names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The source photos as HxWx3 uint8 RGB arrays, by name (all of `PHOTOS` that are installed)."""
    photos = _all_photos()
    if names is None:
        return dict(photos)
    unknown = [n for n in names if n not in photos]
    if unknown:
        raise KeyError(f"unknown or unavailable photos {unknown}; available: {sorted(photos)}")
    return {n: photos[n] for n in names}


def _random_crop(rng: np.random.Generator, height: int, width: int,
                 scale: tuple[float, float]) -> tuple[int, int, int, int]:
    """A box (left, top, right, bottom) covering `scale` of the area at an aspect ratio in [3/4, 4/3],
    like torchvision's RandomResizedCrop; falls back to the largest centred square."""
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ratio = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        w, h = round(np.sqrt(target * ratio)), round(np.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    side = min(height, width)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def sample_images(count: int, size: int = 224, seed: int = 0, names: Sequence[str] | None = None,
                  scale: tuple[float, float] = (0.25, 1.0), normalize: bool = True) -> np.ndarray:
    """`count` images as float32 NCHW (count, 3, size, size): random resized crops (area fraction in
    `scale`) of the photos, resized bicubically with Pillow, half of them flipped left-right.
    With `normalize`, (x - MEAN) / STD for EfficientNet-Lite0; otherwise RGB in [0, 1]."""
    photos = list(load_photos(names).values())
    rng = np.random.default_rng(seed)
    out = np.empty((count, 3, size, size), dtype=np.float32)
    for i in range(count):
        # Cycle through the photos in a shuffled order so every photo is used about equally.
        if i % len(photos) == 0:
            order = rng.permutation(len(photos))
        photo = photos[order[i % len(photos)]]
        box = _random_crop(rng, photo.shape[0], photo.shape[1], scale)
        crop = Image.fromarray(photo).resize((size, size), Image.Resampling.BICUBIC, box=box)
        image = np.asarray(crop, dtype=np.float32) / 255.0
        if rng.random() < 0.5:
            image = image[:, ::-1]
        out[i] = image.transpose(2, 0, 1)
    if normalize:
        out -= np.asarray(MEAN, dtype=np.float32)[:, None, None]
        out /= np.asarray(STD, dtype=np.float32)[:, None, None]
    return out
