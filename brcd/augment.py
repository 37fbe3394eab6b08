"""Image views for training and encoding (SPEC §3, §8).

Train views follow the SimCLR/CIBHash recipe: random resized crop (scale
0.5-1), horizontal flip, colour jitter (0.4, 0.4, 0.4, 0.1) with p = 0.7 in
random order, grayscale with p = 0.2, Gaussian blur (kernel 3, sigma 0.1-2)
with p = 0.5, then normalisation. Clean views: resize to the input size,
normalise.

Augmented view ``view`` of image ``index`` must be the same pixels for every
backbone (teacher at 64 px, student at 32 px, ...), so that the feature banks
of different backbones line up. Hence:

- its random parameters are a pure function of ``(seed, index, view)``,
  drawn from ``np.random.default_rng([seed, index, view])`` with a fixed
  number of draws per parameter, never from global RNG state;
- they are drawn, and every pixel operation is applied, at the image's
  native resolution (:func:`render_view`); only then is the result resized
  to the backbone's input size and normalised (:func:`finish_view`).

The pixel operations work in float32 on [0, 1] (no rounding between steps)
and follow torchvision's definitions (``adjust_*``, ``rgb_to_grayscale``,
``gaussian_blur`` with reflect padding). They are written in NumPy because
per-image torch calls on tiny images cost more in dispatch than in work: a
28 x 28 view takes well under a millisecond on one core.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10
FLIP_P = 0.5
JITTER_P = 0.7
JITTER_STRENGTH = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
GRAYSCALE_P = 0.2
BLUR_P = 0.5
BLUR_SIGMA = (0.1, 2.0)  # kernel 3 x 3

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
_HUE_SECTORS = np.array([5.0, 3.0, 1.0], dtype=np.float32)[:, None, None]


@dataclass(frozen=True)
class ViewParams:
    """Every random choice of one augmented view, in native-pixel units."""

    top: int
    left: int
    height: int
    width: int
    flip: bool
    jitter: bool
    brightness: float
    contrast: float
    saturation: float
    hue: float
    jitter_order: tuple[int, ...]
    grayscale: bool
    blur: bool
    sigma: float


def _crop_box(draws: np.ndarray, position: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box, from pre-drawn uniforms.

    ``draws``: CROP_ATTEMPTS x 2 uniforms (area fraction, log aspect ratio);
    ``position``: 2 uniforms placing the box.
    """
    area = height * width
    log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for area_u, ratio_u in draws:
        target_area = area * (CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * area_u)
        aspect = math.exp(log_lo + (log_hi - log_lo) * ratio_u)
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(position[0] * (height - h + 1)), height - h)
            left = min(int(position[1] * (width - w + 1)), width - w)
            return top, left, h, w
    # As torchvision: fall back to the central crop with the ratio clamped.
    in_ratio = width / height
    if in_ratio < CROP_RATIO[0]:
        w, h = width, int(round(width / CROP_RATIO[0]))
    elif in_ratio > CROP_RATIO[1]:
        h, w = height, int(round(height * CROP_RATIO[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def view_params(height: int, width: int, seed: int, index: int, view: int) -> ViewParams:
    """The parameters of view ``view`` of image ``index``: a pure function of the arguments."""
    if min(seed, index, view) < 0:
        raise ValueError(f"seed, index and view must be >= 0; got {seed}, {index}, {view}")
    rng = np.random.default_rng([int(seed), int(index), int(view)])
    crop_draws = rng.random((CROP_ATTEMPTS, 2))
    position = rng.random(2)
    u = rng.random(9)
    order = tuple(int(k) for k in rng.permutation(4))
    top, left, h, w = _crop_box(crop_draws, position, height, width)
    b, c, s, hue = JITTER_STRENGTH
    return ViewParams(
        top=top,
        left=left,
        height=h,
        width=w,
        flip=bool(u[0] < FLIP_P),
        jitter=bool(u[1] < JITTER_P),
        brightness=float(1 - b + 2 * b * u[2]),
        contrast=float(1 - c + 2 * c * u[3]),
        saturation=float(1 - s + 2 * s * u[4]),
        hue=float(-hue + 2 * hue * u[5]),
        jitter_order=order,
        grayscale=bool(u[6] < GRAYSCALE_P),
        blur=bool(u[7] < BLUR_P),
        sigma=float(BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * u[8]),
    )


# ---------------------------------------------------------------- pixel operations
# x: float32 3 x H x W in [0, 1]. Each follows torchvision's float definition.


def _gray(x: np.ndarray) -> np.ndarray:
    return GRAY_WEIGHTS[0] * x[0] + GRAY_WEIGHTS[1] * x[1] + GRAY_WEIGHTS[2] * x[2]


def adjust_brightness(x: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(x * np.float32(factor), 0, 1)


def adjust_contrast(x: np.ndarray, factor: float) -> np.ndarray:
    factor = np.float32(factor)
    return np.clip(factor * x + (1 - factor) * _gray(x).mean(), 0, 1)


def adjust_saturation(x: np.ndarray, factor: float) -> np.ndarray:
    factor = np.float32(factor)
    return np.clip(factor * x + (1 - factor) * _gray(x)[None], 0, 1)


def adjust_hue(x: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the HSV hue by ``shift`` turns (value and saturation unchanged)."""
    r, g, b = x
    maxc, minc = x.max(0), x.min(0)
    chroma = maxc - minc
    safe = np.where(chroma == 0, np.float32(1), chroma)
    hue = np.where(maxc == r, (g - b) / safe, np.where(maxc == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue6 = np.mod(hue + np.float32(6 * shift), np.float32(6))
    # HSV -> RGB: channel n is V - C * clip(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6.
    k = np.mod(_HUE_SECTORS + hue6, np.float32(6))
    return maxc - chroma * np.clip(np.minimum(k, 4 - k), 0, 1)


def to_grayscale(x: np.ndarray) -> np.ndarray:
    return np.broadcast_to(_gray(x), x.shape).copy()


def gaussian_blur3(x: np.ndarray, sigma: float) -> np.ndarray:
    """3 x 3 Gaussian blur, separable, with reflect padding (torchvision's choice)."""
    if min(x.shape[1:]) < 2:  # reflection needs a neighbour
        return x
    edge = math.exp(-1.0 / (2.0 * sigma * sigma))
    side, mid = np.float32(edge / (1 + 2 * edge)), np.float32(1 / (1 + 2 * edge))
    padded = np.concatenate([x[:, 1:2], x, x[:, -2:-1]], axis=1)
    rows = mid * padded[:, 1:-1] + side * (padded[:, :-2] + padded[:, 2:])
    padded = np.concatenate([rows[:, :, 1:2], rows, rows[:, :, -2:-1]], axis=2)
    return mid * padded[:, :, 1:-1] + side * (padded[:, :, :-2] + padded[:, :, 2:])


_JITTER_OPS = (
    lambda x, p: adjust_brightness(x, p.brightness),
    lambda x, p: adjust_contrast(x, p.contrast),
    lambda x, p: adjust_saturation(x, p.saturation),
    lambda x, p: adjust_hue(x, p.hue),
)


def apply_params(image: np.ndarray, params: ViewParams) -> np.ndarray:
    """All pixel operations of one view: HxWx3 uint8 -> float32 3 x h x w in [0, 1]."""
    crop = image[params.top : params.top + params.height, params.left : params.left + params.width]
    if params.flip:
        crop = crop[:, ::-1]
    x = crop.transpose(2, 0, 1).astype(np.float32, order="C") / np.float32(255)
    if params.jitter:
        for op in params.jitter_order:
            x = _JITTER_OPS[op](x, params)
    if params.grayscale:
        x = to_grayscale(x)
    if params.blur:
        x = gaussian_blur3(x, params.sigma)
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_image(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {array.dtype} {array.shape}")
    return array


def render_view(image: np.ndarray, seed: int, index: int, view: int) -> np.ndarray:
    """Augmented view at native resolution: float32 3 x h x w in [0, 1] (h, w: the crop)."""
    image = _check_image(image)
    params = view_params(image.shape[0], image.shape[1], seed, index, view)
    return apply_params(image, params)


# ---------------------------------------------------------------- resize + normalise


def _stats(values: Sequence[float]) -> torch.Tensor:
    stats = torch.as_tensor(tuple(values), dtype=torch.float32).reshape(1, -1, 1, 1)
    if stats.shape[1] != 3:
        raise ValueError(f"normalisation needs 3 values (one per channel), got {values!r}")
    return stats


def finish_view(pixels, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Float pixels in [0, 1], 3 x h x w or B x 3 x h x w -> resized to size x size, normalised.

    Bilinear resizing with antialiasing (matters when shrinking large photos).
    """
    x = torch.as_tensor(pixels, dtype=torch.float32)
    batched = x.ndim == 4
    x = x if batched else x.unsqueeze(0)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    x = (x - _stats(mean)) / _stats(std)
    return x if batched else x[0]


def _unit_pixels(image: np.ndarray) -> np.ndarray:
    return _check_image(image).transpose(2, 0, 1).astype(np.float32, order="C") / np.float32(255)


def augment_view(
    image: np.ndarray, seed: int, index: int, view: int, size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Augmented view ``view`` of dataset image ``index``: float 3 x size x size, normalised."""
    return finish_view(render_view(image, seed, index, view), size, mean, std)


def clean_view(image: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The image resized to size x size and normalised (query/database/validation)."""
    return finish_view(_unit_pixels(image), size, mean, std)


def rotated_view(image: np.ndarray, k: int, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The clean view rotated by k * 90 degrees counter-clockwise (SSKD's rotations)."""
    return torch.rot90(clean_view(image, size, mean, std), k % 4, dims=(1, 2))


# ---------------------------------------------------------------- batches


def _broadcast(values, count: int, what: str) -> list[int]:
    if isinstance(values, (int, np.integer)):
        return [int(values)] * count
    values = [int(v) for v in values]
    if len(values) != count:
        raise ValueError(f"{what}: expected {count} values, got {len(values)}")
    return values


def _finish_grouped(renders: list[np.ndarray], size: int, mean, std) -> torch.Tensor:
    """Resize renders of mixed shapes with one interpolate call per shape."""
    out = torch.empty(len(renders), 3, size, size)
    by_shape: dict[tuple, list[int]] = {}
    for row, pixels in enumerate(renders):
        by_shape.setdefault(pixels.shape, []).append(row)
    for rows in by_shape.values():
        stack = torch.from_numpy(np.stack([renders[row] for row in rows]))
        out[rows] = finish_view(stack, size, mean, std)
    return out


def augment_batch(
    images: Sequence[np.ndarray],
    seed: int,
    indices: Sequence[int],
    views: Sequence[int] | int,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Augmented views of a batch: B x 3 x size x size. ``views`` may be one int for all.

    Row k equals ``augment_view(images[k], seed, indices[k], views[k], ...)``.
    """
    indices = _broadcast(indices, len(images), "indices")
    views = _broadcast(views, len(images), "views")
    renders = [render_view(image, seed, index, view) for image, index, view in zip(images, indices, views)]
    return _finish_grouped(renders, size, mean, std)


def clean_batch(images: Sequence[np.ndarray], size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Clean views of a batch: B x 3 x size x size."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        if images.dtype != np.uint8 or images.shape[-1] != 3:
            raise ValueError(f"expected N x H x W x 3 uint8 images, got {images.dtype} {images.shape}")
        pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32, order="C") / np.float32(255))
        return finish_view(pixels, size, mean, std)
    return _finish_grouped([_unit_pixels(image) for image in images], size, mean, std)


def rotated_batch(
    images: Sequence[np.ndarray], k: int, size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Clean views of a batch rotated by k * 90 degrees: B x 3 x size x size."""
    return torch.rot90(clean_batch(images, size, mean, std), k % 4, dims=(2, 3))
