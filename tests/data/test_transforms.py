"""Transforms: shapes, numbers, and the same crop/flip/augmentation for every frame of a clip."""

from __future__ import annotations

import pytest
import torch

from fluxvit.data.augment import RandomErasing, parse_rand_augment
from fluxvit.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    TrainTransform,
    center_crop,
    normalize,
    random_resized_crop_box,
    short_side_resize,
    spatial_crop_boxes,
    three_crop,
    to_float_clip,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ramp_clip(t: int = 4, h: int = 36, w: int = 64) -> torch.Tensor:
    """uint8 (T, H, W, 3): red = column, green = row (scaled), blue = frame; identical layout per frame."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    frame = torch.stack([x * 255 // (w - 1), y * 255 // (h - 1), torch.zeros_like(x)], -1)
    clip = frame.expand(t, h, w, 3).clone()
    clip[..., 2] = (torch.arange(t) * 40).view(t, 1, 1)
    return clip.to(torch.uint8)


def test_layout_resize_and_crops():
    clip = to_float_clip(ramp_clip())
    assert clip.shape == (3, 4, 36, 64) and clip.max() <= 1.0
    assert short_side_resize(clip, 18).shape == (3, 4, 18, 32)
    assert short_side_resize(clip.transpose(-1, -2), 18).shape == (3, 4, 32, 18)
    assert center_crop(clip, 36).shape == (3, 4, 36, 36)
    crops = three_crop(clip, 36)
    # left, middle, right along the long (width) side: the red ramp's first column says where
    assert [round(float(c[0, 0, 0, 0]) * 63) for c in crops] == [0, 14, 28]
    assert spatial_crop_boxes(64, 36, 36, 3) == [(0, 0, 36, 36), (14, 0, 36, 36), (28, 0, 36, 36)]


def test_normalize_numbers():
    video = torch.ones(3, 2, 4, 4) * 0.5
    out = normalize(video)
    for c in range(3):
        assert out[c].unique().item() == pytest.approx((0.5 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], abs=1e-6)


def test_random_resized_crop_box_limits():
    for seed in range(300):
        top, left, h, w = random_resized_crop_box(90, 160, (0.08, 1.0), (3 / 4, 4 / 3), gen(seed))
        assert 0 <= top and 0 <= left and top + h <= 90 and left + w <= 160
        area = h * w / (90 * 160)
        assert area <= 1.0 + 1e-9 and area >= 0.07
        if (h, w) != (90, 120):  # the fallback box; otherwise the aspect stays in range (up to rounding)
            assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05


def test_train_transform_shape_and_clip_consistency():
    # every frame identical -> every output frame identical, whatever crop/flip/augmentation was drawn
    frame = ramp_clip(1)
    clip = frame.expand(6, -1, -1, -1).clone()
    tf = TrainTransform(augment=parse_rand_augment("rand-m9-n3-mstd0.5-inc1"), erase=RandomErasing(1.0, "const"))
    for seed in range(10):
        out = tf(clip, 28, gen(seed))
        assert out.shape == (3, 6, 28, 28) and out.dtype == torch.float32
        assert torch.allclose(out, out[:, :1].expand_as(out), atol=1e-6)
    assert tf(clip, (28, 42), gen(0)).shape == (3, 6, 28, 42)
    assert torch.equal(tf(clip, 28, gen(5)), tf(clip, 28, gen(5)))  # seeded


def test_flip_can_be_switched_off():
    clip = ramp_clip()
    no_flip = TrainTransform(scale=(1.0, 1.0), ratio=(64 / 36, 64 / 36), flip=0.0, mean=(0, 0, 0), std=(1, 1, 1))
    flips = TrainTransform(scale=(1.0, 1.0), ratio=(64 / 36, 64 / 36), flip=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    for seed in range(5):
        red = no_flip(clip, (36, 64), gen(seed))[0, 0, 0]
        assert red[0] < 0.05 and red[-1] > 0.95  # red grows to the right: not flipped
        red = flips(clip, (36, 64), gen(seed))[0, 0, 0]
        assert red[0] > 0.95 and red[-1] < 0.05


def test_eval_transform_views_match_resize_then_crop():
    clip = ramp_clip(t=3, h=36, w=64)
    tf = EvalTransform(num_crops=3, mean=(0, 0, 0), std=(1, 1, 1), resize="antialias")
    out = tf(clip, 18)
    assert out.shape == (3, 3, 3, 18, 18)
    ref = three_crop(short_side_resize(to_float_clip(clip), 18), 18)
    for view, r in zip(out, ref):
        assert (view - r).abs().mean() < 0.02  # one resize of the crop vs resize then crop
    single = EvalTransform(num_crops=1)(clip, 14)
    assert single.shape == (1, 3, 3, 14, 14)


def test_rand_augment_of_the_whole_frames_in_parts_is_the_whole_clips():
    """TrainTransform augments the decoded frames a few at a time (the memory of 1080p frames): the
    result is the whole clip's, augmented once, then cropped and resized."""
    from fluxvit.data.transforms import AUGMENT_FRAMES, crop, resize

    g = torch.Generator().manual_seed(3)
    frames = torch.randint(0, 256, (2 * AUGMENT_FRAMES + 1, 40, 52, 3), generator=g, dtype=torch.uint8)
    augment = parse_rand_augment("rand-m9-n4-mstd0.5-inc1")
    tf = TrainTransform(augment=augment, flip=0.0, mean=(0, 0, 0), std=(1, 1, 1), resize="release")
    for seed in range(6):
        out = tf(frames, 28, gen(seed))
        replay = gen(seed)  # the transform's draws in its order: the crop box, then the augmentation's
        box = random_resized_crop_box(40, 52, tf.scale, tf.ratio, replay)
        whole = resize(crop(augment(to_float_clip(frames), replay), box), (28, 28), antialias=False)
        assert torch.allclose(out, whole, atol=1e-6), seed
