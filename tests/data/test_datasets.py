"""Datasets from parts, and DataLoaders that skip, count and report broken clips."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import frame_ids
from torch.utils.data import DataLoader

from fluxvit.data.annotations import read_annotations
from fluxvit.data.datasets import (
    BrokenClip,
    CountBroken,
    SkipBroken,
    VideoClipDataset,
    VideoViewDataset,
    collate_clips,
)
from fluxvit.data.flux_sampler import ClipKey, FluxBatchSampler
from fluxvit.data.sampling import SegmentSampler
from fluxvit.data.transforms import EvalTransform, TrainTransform
from fluxvit.errors import VideoError
from fluxvit.flux.grid import FluxGrid, Grid

PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # keep [0, 1] values so frames can be read back
SMALL_FLUX = FluxGrid(frames=(2, 6, 2), sizes=(28, 56, 14), min_tokens=8, max_tokens=64)


def clip_ids(video: torch.Tensor) -> list[int]:
    """Frame indices of a float (3, T, H, W) clip in [0, 1] made from coded frames."""
    return frame_ids((video.permute(1, 2, 3, 0) * 255).round().clamp(0, 255).to(torch.uint8))


@pytest.fixture
def dataset_dir(tmp_path, make_video, broken_files):
    """6 good coded videos (labels 0..2) and 2 broken ones listed in train.csv."""
    lines = []
    for i in range(6):
        make_video(f"v{i}.mp4", n=40 + i, gop=8)
        lines.append(f"v{i}.mp4 {i % 3}")
    lines += [f"{broken_files['text'].relative_to(tmp_path)} 0", f"{broken_files['missing'].relative_to(tmp_path)} 1"]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    return tmp_path


def test_training_clip_on_a_requested_grid(dataset_dir):
    ann = read_annotations(dataset_dir / "train.csv")
    data = VideoClipDataset(ann, transform=TrainTransform(scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3), flip=0.0, **PLAIN))
    sample = data[ClipKey(0, Grid(8, 28), seed=11)]
    assert sample.video.shape == (3, 8, 28, 28) and sample.label == 0 and sample.index == 0
    g = torch.Generator().manual_seed(11)
    expected = SegmentSampler().sample(40, 8, g).tolist()  # the same seed drives the frame choice
    assert clip_ids(sample.video) == expected
    assert torch.equal(data[(0, Grid(8, 28), 11)].video, sample.video)  # seeded -> reproducible
    assert data[(3, Grid(4, 42, 28))].video.shape == (3, 4, 42, 28)  # no seed: global RNG
    with pytest.raises(VideoError, match="text.mp4: not a readable video"):
        data[(6, Grid(4, 28), 0)]
    with pytest.raises(VideoError, match="missing.mp4: no such video file"):
        data[(7, Grid(4, 28), 0)]


def test_test_views_cover_clips_and_crops(dataset_dir):
    ann = read_annotations(dataset_dir / "train.csv")
    data = VideoViewDataset(ann, Grid(4, 28), num_clips=2, transform=EvalTransform(num_crops=3, **PLAIN))
    s = data[1]
    assert s.video.shape == (6, 3, 4, 28, 28) and s.label == 1 and s.index == 1 and data.num_views == 6
    views = SegmentSampler().views(41, 4, 2)
    for v in range(6):
        assert clip_ids(s.video[v]) == views[v // 3].tolist()
    # 64x48 frames: the three crops slide along the width; flat frames make them equal
    assert torch.allclose(s.video[0], s.video[2], atol=0.02)


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_skips_counts_and_reports_broken_clips(dataset_dir, workers, caplog):
    ann = read_annotations(dataset_dir / "train.csv")
    data = SkipBroken(VideoClipDataset(ann, transform=TrainTransform(**PLAIN)))
    sampler = FluxBatchSampler(len(data), 2, SMALL_FLUX, seed=0, shuffle=False)
    loader = CountBroken(DataLoader(data, batch_sampler=sampler, collate_fn=collate_clips, num_workers=workers))
    with caplog.at_level(logging.WARNING, logger="fluxvit.data.datasets"):
        got = list(loader)
    # 8 samples in 4 batches; the last batch holds both broken files and is dropped entirely
    assert [len(b) for b in got] == [2, 2, 2]
    assert sorted(i for b in got for i in b.index.tolist()) == list(range(6))
    for b in got:
        t, r = b.grid.frames, b.grid.height
        assert b.video.shape == (2, 3, t, r, r) and 8 <= t * (r // 14) ** 2 <= 64
    assert len(loader.skipped) == 2 and loader.total_skipped == 2
    assert any("text.mp4" in m for m in loader.skipped) and any("missing.mp4" in m for m in loader.skipped)
    assert "skipped 2 broken clip(s)" in caplog.text
    list(loader)  # the next epoch counts afresh
    assert len(loader.skipped) == 2 and loader.total_skipped == 4 and loader.epochs == 2


def test_eval_loader_drops_broken_videos(dataset_dir):
    ann = read_annotations(dataset_dir / "train.csv")
    data = SkipBroken(VideoViewDataset(ann, Grid(2, 28), num_clips=1, transform=EvalTransform(num_crops=1)))
    assert isinstance(data[6], BrokenClip) and data[6].index == 6
    loader = CountBroken(DataLoader(data, batch_size=4, collate_fn=collate_clips), name="val")
    batches = list(loader)
    assert [b.video.shape for b in batches] == [(4, 1, 3, 2, 28, 28), (2, 1, 3, 2, 28, 28)]
    assert loader.total_skipped == 2 and loader.report().startswith("val: skipped 2 broken clip(s)")
