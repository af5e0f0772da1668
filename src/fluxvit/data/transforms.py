"""Clip transforms on tensors: every frame of a clip gets the same crop, flip and augmentation.

Functions first (they take tensors and a ``torch.Generator`` and return tensors), two thin
classes on top: :class:`TrainTransform` and :class:`EvalTransform`, which turn decoded uint8
frames (T, H, W, 3) into normalised float clips (3, T, R, R) for a size R chosen per batch.

Cropping happens on the uint8 frames *before* resizing, so the expensive resize touches only the
kept pixels: random-resized-crop, and "short-side resize then crop" (computed as a square box of
the short side in the original frame, then one resize) cost one resize of the crop each.

Video layout: float clips are (C, T, H, W) with values in [0, 1] until :func:`normalize`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fluxvit.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Box = tuple[int, int, int, int]  # top, left, height, width


# ----------------------------------------------------------------------------- layout and resize
def to_float_clip(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, H, W) in [0, 1]."""
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ConfigError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    return frames.permute(3, 0, 1, 2).float().div_(255.0)


def resize(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, T, H, W) float -> (C, T, h, w), bilinear with antialiasing (so downscaling does not alias)."""
    if tuple(video.shape[-2:]) == tuple(size):
        return video
    frames = video.transpose(0, 1)  # (T, C, H, W): time as the batch, one call for the whole clip
    out = F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.transpose(0, 1).clamp_(0.0, 1.0)


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) with the short side equal to ``size`` and the aspect ratio kept."""
    if height <= width:
        return size, max(round(width * size / height), size)
    return max(round(height * size / width), size), size


def short_side_resize(video: torch.Tensor, size: int) -> torch.Tensor:
    """(C, T, H, W) -> (C, T, h, w) with min(h, w) = ``size``."""
    return resize(video, short_side_size(*video.shape[-2:], size))


def crop(video: torch.Tensor, box: Box) -> torch.Tensor:
    """Crop the last two dims of ``video`` (any leading dims) to ``box`` = (top, left, h, w)."""
    top, left, h, w = box
    return video[..., top:top + h, left:left + w]


# ----------------------------------------------------------------------------- crop boxes
def spatial_crop_boxes(height: int, width: int, size: int, num_crops: int) -> list[Box]:
    """``num_crops`` square ``size`` boxes spread evenly along the long side (1: the centre crop;
    3: the usual first/middle/last test crops)."""
    if size > min(height, width):
        raise ConfigError(f"crop {size} is larger than the frame {height}x{width}")
    if num_crops < 1:
        raise ConfigError(f"need at least one crop, got {num_crops}")
    boxes = []
    for k in range(num_crops):
        frac = 0.5 if num_crops == 1 else k / (num_crops - 1)
        top = round((height - size) * (frac if height > width else 0.5))
        left = round((width - size) * (frac if width >= height else 0.5))
        boxes.append((top, left, size, size))
    return boxes


def center_crop(video: torch.Tensor, size: int) -> torch.Tensor:
    """(C, T, H, W) -> (C, T, size, size) from the middle."""
    return crop(video, spatial_crop_boxes(*video.shape[-2:], size, 1)[0])


def three_crop(video: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Three (C, T, size, size) crops along the long side: start, middle, end."""
    return [crop(video, b) for b in spatial_crop_boxes(*video.shape[-2:], size, 3)]


def random_resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    attempts: int = 10,
) -> Box:
    """A box covering a random fraction ``scale`` of the area with aspect ratio (w/h) in ``ratio``
    (log-uniform); after ``attempts`` misses, the largest centred box whose ratio fits."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = math.exp(log_lo + u[1] * (log_hi - log_lo))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(u[2] * (height - h + 1)), height - h)
            left = min(int(u[3] * (width - w + 1)), width - w)
            return top, left, h, w
    frame_ratio = width / height
    if frame_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif frame_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def crop_resize(frames: torch.Tensor, box: Box, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, *size) in [0, 1]: crop ``box`` first, then resize."""
    top, left, h, w = box
    return resize(to_float_clip(frames[:, top:top + h, left:left + w]), size)


# ----------------------------------------------------------------------------- flip, normalise
def horizontal_flip(video: torch.Tensor) -> torch.Tensor:
    """Mirror left-right (the last dim), every frame alike."""
    return video.flip(-1)


def random_horizontal_flip(video: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Flip the whole clip with probability ``p``."""
    return horizontal_flip(video) if float(torch.rand((), generator=generator)) < p else video


def normalize(video: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
              ) -> torch.Tensor:
    """(C, ..., H, W) float in [0, 1] -> (x - mean) / std per channel (dim 0)."""
    shape = (-1,) + (1,) * (video.ndim - 1)
    m = torch.tensor(mean, dtype=video.dtype).view(shape)
    s = torch.tensor(std, dtype=video.dtype).view(shape)
    return (video - m) / s


# ----------------------------------------------------------------------------- RandAugment
def _grey(video: torch.Tensor) -> torch.Tensor:
    """(3, T, H, W) -> (1, T, H, W) luma (ITU-R 601), as PIL's "L" mode computes it."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=video.dtype).view(3, 1, 1, 1)
    return (video * w).sum(0, keepdim=True)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: float) -> torch.Tensor:
    """b + factor * (a - b), clamped: factor 1 keeps ``a``, 0 gives ``b`` (PIL's ImageEnhance)."""
    return (b + factor * (a - b)).clamp_(0.0, 1.0)


def _affine(video: torch.Tensor, theta: list[list[float]]) -> torch.Tensor:
    """Warp every frame by the same 2x3 affine ``theta`` (normalised coordinates), grey fill."""
    c, t, h, w = video.shape
    frames = video.transpose(0, 1) - 0.5  # grid_sample fills with 0: shift so the fill is grey
    mat = torch.tensor(theta, dtype=video.dtype).expand(t, 2, 3)
    grid = F.affine_grid(mat, [t, c, h, w], align_corners=False)
    out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out + 0.5).transpose(0, 1).clamp_(0.0, 1.0)


def _sharpness(video: torch.Tensor, factor: float) -> torch.Tensor:
    c, t, h, w = video.shape
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], dtype=video.dtype) / 13.0
    frames = video.reshape(c * t, 1, h, w)
    smooth = F.conv2d(F.pad(frames, (1, 1, 1, 1), mode="replicate"), kernel.view(1, 1, 3, 3))
    return _blend(video, smooth.view(c, t, h, w), factor)


def _autocontrast(video: torch.Tensor) -> torch.Tensor:
    lo = video.amin(dim=(1, 2, 3), keepdim=True)  # per channel over the whole clip: clip-consistent
    hi = video.amax(dim=(1, 2, 3), keepdim=True)
    return ((video - lo) / (hi - lo).clamp_min(1e-6)).clamp_(0.0, 1.0)


# op name -> f(video, level) with level in [-1, 1] (sign chosen at random for symmetric ops)
_OPS = {
    "identity": lambda v, s: v,
    "autocontrast": lambda v, s: _autocontrast(v),
    "brightness": lambda v, s: _blend(v, torch.zeros_like(v), 1.0 + 0.9 * s),
    "color": lambda v, s: _blend(v, _grey(v).expand_as(v), 1.0 + 0.9 * s),
    "contrast": lambda v, s: _blend(v, _grey(v).mean().expand_as(v), 1.0 + 0.9 * s),
    "sharpness": lambda v, s: _sharpness(v, 1.0 + 0.9 * s),
    "posterize": lambda v, s: torch.floor(v * 255.0 / 2 ** int(4 * abs(s))) * 2 ** int(4 * abs(s)) / 255.0,
    "solarize": lambda v, s: torch.where(v >= 1.0 - abs(s), 1.0 - v, v),
    "rotate": lambda v, s: _affine(v, [[math.cos(s * math.pi / 6), -math.sin(s * math.pi / 6), 0.0],
                                       [math.sin(s * math.pi / 6), math.cos(s * math.pi / 6), 0.0]]),
    "shear_x": lambda v, s: _affine(v, [[1.0, 0.3 * s, 0.0], [0.0, 1.0, 0.0]]),
    "shear_y": lambda v, s: _affine(v, [[1.0, 0.0, 0.0], [0.3 * s, 1.0, 0.0]]),
    "translate_x": lambda v, s: _affine(v, [[1.0, 0.0, 0.9 * s], [0.0, 1.0, 0.0]]),
    "translate_y": lambda v, s: _affine(v, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.9 * s]]),
}
RAND_AUGMENT_OPS = tuple(_OPS)


def rand_augment(
    video: torch.Tensor,
    generator: torch.Generator,
    num_ops: int = 2,
    magnitude: float = 9.0,
    magnitude_std: float = 0.5,
    ops: Sequence[str] = RAND_AUGMENT_OPS,
) -> torch.Tensor:
    """RandAugment on a whole clip: ``num_ops`` ops drawn once and applied identically to every frame.

    ``video``: float (3, T, H, W) in [0, 1]. ``magnitude`` is on RandAugment's 0..10 scale, jittered
    per op by a normal of std ``magnitude_std`` (timm's "mstd"); symmetric ops take a random sign.
    Geometric ranges at magnitude 10: rotate 30 degrees, shear 0.3, translate 45% of the half-size.
    """
    for name in ops:
        if name not in _OPS:
            raise ConfigError(f"unknown RandAugment op {name!r}; choose from {', '.join(_OPS)}")
    for _ in range(num_ops):
        name = ops[int(torch.randint(len(ops), (), generator=generator))]
        m = magnitude + magnitude_std * float(torch.randn((), generator=generator)) if magnitude_std else magnitude
        level = min(max(m, 0.0), 10.0) / 10.0
        sign = 1.0 if float(torch.rand((), generator=generator)) < 0.5 else -1.0
        video = _OPS[name](video, sign * level)
    return video


@dataclass(frozen=True)
class RandAugment:
    """Clip-consistent RandAugment (see :func:`rand_augment`)."""

    num_ops: int = 2
    magnitude: float = 9.0
    magnitude_std: float = 0.5
    ops: tuple[str, ...] = RAND_AUGMENT_OPS

    def __call__(self, video: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return rand_augment(video, generator, self.num_ops, self.magnitude, self.magnitude_std, self.ops)


# ----------------------------------------------------------------------------- the two pipelines
@dataclass(frozen=True)
class TrainTransform:
    """uint8 (T, H, W, 3) -> normalised float (3, T, R, R): random resized crop (``scale`` of the area,
    aspect ``ratio``), optional clip-consistent RandAugment, horizontal flip with probability
    ``flip`` (0 for direction-sensitive data such as SSv2), normalisation.

    The defaults are the release's fine-tuning recipe (scale 0.08-1, ratio 3/4-4/3, flip 0.5).
    """

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    augment: RandAugment | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, frames: torch.Tensor, size: int | tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        box = random_resized_crop_box(frames.shape[1], frames.shape[2], self.scale, self.ratio, generator)
        video = crop_resize(frames, box, hw)
        if self.augment is not None:
            video = self.augment(video, generator)
        if self.flip:
            video = random_horizontal_flip(video, self.flip, generator)
        return normalize(video, self.mean, self.std)


@dataclass(frozen=True)
class EvalTransform:
    """uint8 (T, H, W, 3) -> normalised float (num_crops, 3, T, R, R): resize the short side to R,
    then ``num_crops`` R x R crops along the long side (1: centre crop; 3: the usual test crops)."""

    num_crops: int = 1
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, frames: torch.Tensor, size: int) -> torch.Tensor:
        h, w = frames.shape[1], frames.shape[2]
        side = min(h, w)
        # the R x R crops of the short-side-resized frame are side x side boxes of the original
        boxes = spatial_crop_boxes(h, w, side, self.num_crops)
        return torch.stack([normalize(crop_resize(frames, b, (size, size)), self.mean, self.std) for b in boxes])
