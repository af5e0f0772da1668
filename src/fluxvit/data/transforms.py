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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from fluxvit import limits
from fluxvit.errors import ConfigError, VideoError
from fluxvit.typecheck import show

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Box = tuple[int, int, int, int]  # top, left, height, width


class ClipAugment(Protocol):
    """A seeded clip augmentation: float (3, T, H, W) and a generator -> the same shape."""

    def __call__(self, video: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...


class FrameAugment(ClipAugment, Protocol):
    """A clip augmentation that works frame by frame: ``frozen(generator)`` makes the clip's
    draws and returns the function applying them to any of its frames
    (:class:`fluxvit.data.augment.RandAugment`)."""

    def frozen(self, generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]: ...


# Frames of the whole decoded video RandAugment converts and augments at a time: its float
# intermediates of 16 1080p frames were 1.2-3.8 GB per loader worker, of 4 a quarter of that.
AUGMENT_FRAMES = 4


# How frames are resized. "release": as the official release, bilinear without antialiasing in
# training (its random resized crop) and OpenCV's linear filter on the whole frame at test time
# (short side, then the crops); "antialias": antialiased bilinear of the crop, both ways.
RESIZE_MODES = ("release", "antialias")
DEFAULT_RESIZE = "release"


# ----------------------------------------------------------------------------- layout and resize
def to_float_clip(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, H, W) in [0, 1]."""
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ConfigError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    return frames.permute(3, 0, 1, 2).float().div_(255.0)


def check_resize(mode: str) -> str:
    """``mode`` if it is one of :data:`RESIZE_MODES`, else one :class:`ConfigError` line."""
    if mode not in RESIZE_MODES:
        raise ConfigError(f"resize {show(mode)} is not one of {', '.join(RESIZE_MODES)}")
    return mode


def resize(video: torch.Tensor, size: tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """(C, T, H, W) float -> (C, T, h, w), bilinear (half-pixel centres); ``antialias``: widen the
    filter when downscaling so fine detail does not alias (off: the release's ``interpolate`` and,
    up to OpenCV's fixed-point rounding, its ``cv2.resize(..., INTER_LINEAR)``)."""
    if tuple(video.shape[-2:]) == tuple(size):
        return video
    frames = video.transpose(0, 1)  # (T, C, H, W): time as the batch, one call for the whole clip
    out = F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=antialias)
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


def crop_resize(frames: torch.Tensor, box: Box, size: tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, *size) in [0, 1]: crop ``box`` first, then resize."""
    top, left, h, w = box
    return resize(to_float_clip(frames[:, top:top + h, left:left + w]), size, antialias)


def release_test_boxes(height: int, width: int, size: int, num_crops: int) -> tuple[tuple[int, int], list[Box]]:
    """The release's test-time geometry for ``size``: the frame resized to (h, w) with the short
    side ``size`` and the long side ``int(size * long / short)`` (its ``get_resize_sizes``), and
    ``num_crops`` square crops of that frame starting at ``int(k * (long - size) / (num_crops - 1))``
    along the long side (one crop: ``int((long - size) / 2)``)."""
    if num_crops < 1:
        raise ConfigError(f"need at least one crop, got {num_crops}")
    if height > width:  # the release's rule for which side is short: width < height
        h, w = int(size * height / width), size
    else:
        h, w = size, int(size * width / height)
    long = max(h, w)
    step = (long - size) / (2 if num_crops == 1 else num_crops - 1)
    boxes = []
    for k in range(num_crops):
        start = int(step if num_crops == 1 else k * step)
        boxes.append((start, 0, size, size) if h >= w else (0, start, size, size))
    return (h, w), boxes


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


# ----------------------------------------------------------------------------- the two pipelines
@dataclass(frozen=True)
class TrainTransform:
    """uint8 (T, H, W, 3) -> normalised float (3, T, R, R): optional clip-consistent RandAugment
    (``augment``, :class:`fluxvit.data.augment.RandAugment`) on the whole frames, random resized crop
    (``scale`` of the area, aspect ``ratio``), horizontal flip with probability ``flip`` (0 for
    direction-sensitive data such as SSv2), normalisation, optional random erasing (``erase``,
    :class:`fluxvit.data.augment.RandomErasing`), in the release's order.

    The defaults are the release's crop and flip (scale 0.08-1, ratio 3/4-4/3, flip 0.5) and its
    resize (``resize``: bilinear without antialiasing); augmentation is off unless given.
    """

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    augment: FrameAugment | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    erase: ClipAugment | None = None
    resize: str = DEFAULT_RESIZE

    def __post_init__(self) -> None:
        check_resize(self.resize)

    def __call__(self, frames: torch.Tensor, size: int | tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        antialias = self.resize == "antialias"
        box = random_resized_crop_box(frames.shape[1], frames.shape[2], self.scale, self.ratio, generator)
        if self.augment is None:
            video = crop_resize(frames, box, hw, antialias)  # the cheap way: only the box is converted
        else:  # as the release: RandAugment sees the whole frame (its rotations' corners mostly cropped away)
            augment = self.augment.frozen(generator)  # one clip's draws, for all its frames
            video = torch.cat([resize(crop(augment(to_float_clip(part)), box), hw, antialias)
                               for part in frames.split(AUGMENT_FRAMES)], dim=1)
        if self.flip:
            video = random_horizontal_flip(video, self.flip, generator)
        video = normalize(video, self.mean, self.std)
        return video if self.erase is None else self.erase(video, generator)


@dataclass(frozen=True)
class EvalTransform:
    """uint8 (T, H, W, 3) -> normalised float (num_crops, 3, T, R, R): resize the short side to R,
    then ``num_crops`` R x R crops along the long side (1: centre crop; 3: the usual test crops).

    ``resize="release"``: as the release tests, the whole frame is resized without antialiasing
    (OpenCV's linear filter) to its :func:`release_test_boxes` size, then cropped;
    ``"antialias"``: each crop is a square box of the original frame, resized once, antialiased."""

    num_crops: int = 1
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = DEFAULT_RESIZE

    def __post_init__(self) -> None:
        check_resize(self.resize)

    def __call__(self, frames: torch.Tensor, size: int) -> torch.Tensor:
        h, w = frames.shape[1], frames.shape[2]
        if self.resize == "release":
            shape, boxes = release_test_boxes(h, w, size, self.num_crops)
            # A thin frame's long side grows with it (2x4000 px at 224: 448,000 px): the resized
            # frame's pixels are capped as a decoded frame's are, a video error to skip and count.
            limits.CLIP_PIXELS.check(frames.shape[0] * shape[0] * shape[1],
                                     f"{frames.shape[0]} frames of {h}x{w} resized to {shape[0]}x{shape[1]}",
                                     VideoError)
            video = resize(to_float_clip(frames), shape, antialias=False)
            return torch.stack([normalize(crop(video, b), self.mean, self.std) for b in boxes])
        side = min(h, w)
        # the R x R crops of the short-side-resized frame are side x side boxes of the original
        boxes = spatial_crop_boxes(h, w, side, self.num_crops)
        return torch.stack([normalize(crop_resize(frames, b, (size, size)), self.mean, self.std) for b in boxes])
