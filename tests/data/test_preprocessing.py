"""data.resize and data.view_offsets: the release's test pipeline reproduced (against OpenCV, the
release's own filter), its SSv2 clip offsets, and the preprocessing record a checkpoint carries
to every evaluation path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fluxvit.data.preprocessing import META_KEY, Preprocessing, preprocessing_of, set_view_offsets
from fluxvit.data.sampling import SegmentSampler, segment_views
from fluxvit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform
from fluxvit.errors import CheckpointError, ConfigError, VideoError


def detailed_clip(t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """uint8 (T, H, W, 3) with 1-px detail: a fine checkerboard over noise, so filters differ."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (t, h, w, 3), generator=g)
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    checker = ((x + y) % 2 * 255)[None, :, :, None]
    return ((noise + checker) // 2).to(torch.uint8)


def release_test_views(frames: np.ndarray, size: int, num_crops: int) -> list[np.ndarray]:
    """The release's test pipeline, written from its datasets/kinetics_sparse_o4a.py and
    functional.py: cv2 short-side resize (long side int(size * long / short)), then crop k at
    int(k * (long - size) / (num_crops - 1)) (one crop: int((long - size) / 2)), then ToTensor and
    normalise. Returns (3, T, size, size) float arrays."""
    cv2 = pytest.importorskip("cv2")  # the dev extra installs opencv-python-headless
    t, h, w, _ = frames.shape
    if w < h:
        ow, oh = size, int(size * h / w)
    else:
        oh, ow = size, int(size * w / h)
    resized = np.stack([cv2.resize(f, (ow, oh), interpolation=cv2.INTER_LINEAR) for f in frames])
    long = max(oh, ow)
    step = (long - size) / (2 if num_crops == 1 else num_crops - 1)
    out = []
    for k in range(num_crops):
        start = int(step) if num_crops == 1 else int(k * step)
        crop = resized[:, start:start + size] if oh >= ow else resized[:, :, start:start + size]
        x = crop.astype(np.float32) / 255.0
        x = (x - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
        out.append(x.transpose(3, 0, 1, 2))
    return out


def grey_levels(ours: torch.Tensor, theirs: np.ndarray) -> float:
    """Largest difference in 8-bit grey levels between two normalised clips."""
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    return float(((ours - torch.from_numpy(theirs)) * std).abs().max() * 255)


@pytest.mark.parametrize("shape,size,crops", [((4, 90, 160), 56, 3), ((3, 160, 90), 56, 3), ((3, 77, 131), 42, 1),
                                              ((2, 64, 64), 28, 3), ((2, 36, 64), 56, 1)])
def test_release_resize_matches_the_release_test_pipeline_within_one_grey_level(shape, size, crops):
    frames = detailed_clip(*shape)
    ours = EvalTransform(num_crops=crops, resize="release")(frames, size)
    theirs = release_test_views(frames.numpy(), size, crops)
    assert ours.shape == (crops, 3, shape[0], size, size)
    for view, ref in zip(ours, theirs):
        assert grey_levels(view, ref) <= 1.0 + 1e-3  # OpenCV's fixed-point weights round; ours do not
    # The antialiased filter is another pipeline: on this detail it is far from the release's.
    if min(shape[1:]) > size:
        other = EvalTransform(num_crops=crops, resize="antialias")(frames, size)
        assert max(grey_levels(v, r) for v, r in zip(other, theirs)) > 20


def test_release_training_resize_is_interpolate_without_antialiasing():
    frames = detailed_clip(3, 48, 64, seed=2)
    whole = dict(scale=(1.0, 1.0), ratio=(64 / 48, 64 / 48), flip=0.0, mean=(0, 0, 0), std=(1, 1, 1))
    gen = torch.Generator().manual_seed(0)
    out = TrainTransform(**whole, resize="release")(frames, 28, gen)
    ref = F.interpolate(frames.permute(0, 3, 1, 2).float() / 255, size=(28, 28), mode="bilinear",
                        align_corners=False).clamp(0, 1).permute(1, 0, 2, 3)
    assert torch.allclose(out, ref, atol=1e-6)
    smooth = TrainTransform(**whole, resize="antialias")(frames, 28, torch.Generator().manual_seed(0))
    assert (smooth - ref).abs().max() > 0.1  # the other filter really is another


def test_a_thin_frame_cannot_blow_up_the_release_resize(monkeypatch):
    monkeypatch.setenv("FLUXVIT_MAX_CLIP_PIXELS", str(2**16))
    frames = torch.zeros(2, 2, 400, 3, dtype=torch.uint8)  # 2 x 400 px: at 56, the long side is 11,200 px
    with pytest.raises(VideoError, match="resized to 56x11200"):
        EvalTransform(resize="release")(frames, 56)
    with pytest.raises(ConfigError, match="resize 'lanczos'"):
        EvalTransform(resize="lanczos")


def release_ssv2_test_indices(n: int, t: int, num_clips: int) -> list[list[int]]:
    """ssv2_ofa.py's test sampling: tick = n / T, clip k takes int(k * tick / K + tick * x)."""
    tick = n / t
    return [[int(k * tick / num_clips + tick * x) for x in range(t)] for k in range(num_clips)]


def test_start_offsets_are_the_release_ssv2_test_clips():
    for n in (8, 17, 30, 31, 64, 97, 300):
        for t in (2, 4, 8, 16):
            ours = segment_views(n, t, 2, offsets="start").tolist()
            assert ours == release_ssv2_test_indices(n, t, 2), (n, t)
    # and the default (Kinetics) clips sit at 1/3 and 2/3 of each segment: other frames
    assert segment_views(64, 8, 2).tolist() != segment_views(64, 8, 2, offsets="start").tolist()
    assert SegmentSampler("start").views(64, 8, 2).tolist() == release_ssv2_test_indices(64, 8, 2)
    with pytest.raises(ConfigError, match="view offsets 'middle'"):
        SegmentSampler("middle")


class _Model:
    def __init__(self, meta: dict | None) -> None:
        self.checkpoint_meta = meta
        self.checkpoint_path = "m.safetensors"


def test_the_preprocessing_record_and_its_defaults():
    assert preprocessing_of(_Model(None)) == Preprocessing("release", "between")  # the release's weights
    model = _Model({META_KEY: {"resize": "antialias", "view_offsets": "start"}})
    pre = preprocessing_of(model)
    assert pre.transform(3) == EvalTransform(num_crops=3, resize="antialias")
    assert pre.sampler() == SegmentSampler("start")
    assert preprocessing_of(model, "between").view_offsets == "between"
    set_view_offsets(model, "between")
    assert model.checkpoint_meta[META_KEY] == {"resize": "antialias", "view_offsets": "between"}
    for bad in ({"resize": "bicubic"}, {"resize": "release", "crop": 1}, "release", {"view_offsets": 3}):
        with pytest.raises(CheckpointError, match="m.safetensors"):
            preprocessing_of(_Model({META_KEY: bad}))


def test_a_trained_checkpoint_records_how_it_was_trained_and_evaluation_follows(tmp_path, capsys):
    from fluxvit.data.encode import write_video
    from fluxvit.evaluate.predict import read_views
    from fluxvit.models import load_checkpoint
    from fluxvit.train.trainer import train

    cfg = {"out_dir": str(tmp_path / "run"), "steps": 1, "progress": False,
           "model": {"name": "fluxvit_nano_patch14", "head_budgets": [64]},
           "data": {"source": "synthetic", "train_per_class": 1, "val_per_class": 1, "size": 56, "frames": 4,
                    "classes": ["brighten", "darken"], "batch_size": 2, "resize": "antialias", "view_offsets": "start"},
           "flux": {"fixed": "4x56"}, "objective": {"name": "fixed"}, "eval": {"grid": "4x56"}}
    result = train(cfg)
    model = load_checkpoint(result.checkpoint)
    assert model.checkpoint_meta[META_KEY] == {"resize": "antialias", "view_offsets": "start"}
    video = write_video(tmp_path / "v.mp4", detailed_clip(24, 60, 80, seed=3).numpy())
    from fluxvit.evaluate.runner import Views
    from fluxvit.flux.grid import Grid

    views = read_views(video, Grid(4, 56), Views(2, 1), preprocessing=preprocessing_of(model))
    release = read_views(video, Grid(4, 56), Views(2, 1))
    assert views.shape == release.shape == (2, 3, 4, 56, 56)
    assert not torch.allclose(views, release)  # other frames (offsets) and another filter
    # the command line: the recorded preprocessing by default, --view-offsets over it, checked
    from fluxvit.cli import main

    ckpt = str(result.checkpoint)
    assert main(["predict", str(video), "--checkpoint", ckpt, "--grid", "4x56", "--views", "2x1", "--json"]) == 0
    assert main(["predict", str(video), "--checkpoint", ckpt, "--grid", "4x56", "--views", "2x1", "--json",
                 "--view-offsets", "between"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    recorded, between = (json.loads(line)["top"] for line in out[-2:])
    assert recorded != between  # other clips, other probabilities
    assert main(["predict", str(video), "--checkpoint", ckpt, "--view-offsets", "middle"]) == 2
    assert "view offsets 'middle' is not one of between, start" in capsys.readouterr().err
