"""Clip sources and test datasets from parts, and loaders that skip, count and report broken clips."""

from __future__ import annotations

import pytest
import torch
from conftest import frame_ids
from torch.utils.data import DataLoader

from fluxvit.data.annotations import read_annotations
from fluxvit.data.batches import MAX_REPLACEMENTS, BatchPlan, PlannedBatches, batch_loader
from fluxvit.data.datasets import (
    BrokenClip,
    CountBroken,
    SkipBroken,
    VideoViewDataset,
    collate_clips,
)
from fluxvit.data.sampling import SegmentSampler
from fluxvit.data.sources import VideoFileSource
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
    source = VideoFileSource(ann, TrainTransform(scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3), flip=0.0, **PLAIN))
    assert source.classes == ["a", "b", "c"] and len(source) == 8
    video, label = source.clip(0, Grid(8, 28), torch.Generator().manual_seed(11), train=True)
    assert video.shape == (3, 8, 28, 28) and label == 0
    # one draw from the caller's stream seeds the clip's own stream, which picks the frames
    clip_gen = torch.Generator().manual_seed(int(torch.randint(2**62, (), generator=torch.Generator().manual_seed(11))))
    assert clip_ids(video) == SegmentSampler().sample(40, 8, clip_gen).tolist()
    again, _ = source.clip(0, Grid(8, 28), torch.Generator().manual_seed(11), train=True)
    assert torch.equal(again, video)  # seeded -> reproducible
    other, _ = source.clip(0, Grid(8, 28), torch.Generator().manual_seed(12), train=True)
    assert clip_ids(other) != clip_ids(video)
    central, _ = source.clip(3, Grid(4, 42, 28), None, train=False)  # validation: the central view
    assert central.shape == (3, 4, 42, 42)
    with pytest.raises(VideoError, match="text.mp4: not a readable video"):
        source.clip(6, Grid(4, 28), torch.Generator().manual_seed(0), train=True)
    with pytest.raises(VideoError, match="missing.mp4: no such video file"):
        source.clip(7, Grid(4, 28), torch.Generator().manual_seed(0), train=True)


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
def test_training_batches_replace_and_name_broken_clips(dataset_dir, workers):
    ann = read_annotations(dataset_dir / "train.csv")
    source = VideoFileSource(ann, TrainTransform(**PLAIN))
    plan = BatchPlan(len(source), 4, SMALL_FLUX.grids, seed=0)
    batches = list(batch_loader(source, plan, 0, 6, workers))
    # every batch full and rectangular on its own grid, broken clips replaced by readable ones
    for step, b in enumerate(batches):
        t, r = b.grid.frames, b.grid.height
        assert b.grid == plan.grid(step) and b.video.shape == (4, 3, t, r, r) and 8 <= t * (r // 14) ** 2 <= 64
    broken = [m for b in batches for m in b.broken]
    drawn = [i for step in range(6) for i in plan.indices(step)]
    assert len(broken) >= sum(i >= 6 for i in drawn) > 0  # each broken draw named (replacements may be too)
    assert all("text.mp4" in m or "missing.mp4" in m for m in broken)
    again = list(batch_loader(source, plan, 0, 6, 0))  # deterministic, whatever the worker count
    assert all(torch.equal(a.video, b.video) and a.broken == b.broken for a, b in zip(batches, again))


def test_a_run_of_broken_clips_is_one_clear_error(dataset_dir):
    ann = read_annotations(dataset_dir / "train.csv")
    only_broken = VideoFileSource(ann.records[6:], TrainTransform(**PLAIN))
    with pytest.raises(VideoError, match=f"{MAX_REPLACEMENTS} broken clips in a row \\(the last: .*mp4"):
        PlannedBatches(only_broken, BatchPlan(2, 1, (Grid(2, 28),)))[0]


def test_eval_loader_drops_broken_videos(dataset_dir):
    ann = read_annotations(dataset_dir / "train.csv")
    data = SkipBroken(VideoViewDataset(ann, Grid(2, 28), num_clips=1, transform=EvalTransform(num_crops=1)))
    assert isinstance(data[6], BrokenClip) and data[6].index == 6
    loader = CountBroken(DataLoader(data, batch_size=4, collate_fn=collate_clips), name="val")
    batches = list(loader)
    assert [b.video.shape for b in batches] == [(4, 1, 3, 2, 28, 28), (2, 1, 3, 2, 28, 28)]
    assert loader.total_skipped == 2 and loader.report().startswith("val: skipped 2 broken clip(s)")


class _CountingReader:
    """A reader that counts the decodes (reads) of each video."""

    def __init__(self) -> None:
        from fluxvit.data.video import PyAVReader

        self.inner, self.reads = PyAVReader(), {}

    def num_frames(self, path):
        return self.inner.num_frames(path)

    def read(self, path, indices):
        self.reads[str(path)] = self.reads.get(str(path), 0) + 1
        return self.inner.read(path, indices)


def test_repeated_augmentation_decodes_each_video_once_and_augments_it_twice(dataset_dir):
    from fluxvit.data.augment import RandomErasing

    ann = read_annotations(dataset_dir / "train.csv")
    reader = _CountingReader()
    # const erasing marks each augmentation's own box; the median pixel still reads the frame index
    source = VideoFileSource(ann.records[:6], TrainTransform(**PLAIN, erase=RandomErasing(1.0, "const")), reader)
    plan = BatchPlan(len(source), 4, (Grid(4, 28),), seed=5, repeats=2)
    assert plan.videos_per_batch == 2 and len(plan.indices(0)) == 2
    seen = []
    for step in range(3):
        b = PlannedBatches(source, plan)[step]
        assert b.video.shape == (4, 3, 4, 28, 28)
        for k, index in enumerate(plan.indices(step)):
            first, second = b.video[2 * k], b.video[2 * k + 1]
            assert b.labels[2 * k] == b.labels[2 * k + 1] == ann.records[index].label
            ids = lambda v: frame_ids((v.permute(1, 2, 3, 0) * 255).round().to(torch.uint8)  # noqa: E731
                                      .flatten(1, 2).median(1).values[:, None, None])
            assert ids(first) == ids(second)  # one frame draw ...
            assert not torch.equal(first, second)  # ... two augmentations (two erased boxes)
            seen.append(index)
    assert sorted(seen) == list(range(6))  # an epoch: 3 steps x 2 videos, each video once
    assert set(reader.reads.values()) == {1}  # each decoded once for both of its clips
    assert plan.state_dict()["repeats"] == 2 and "repeats" not in BatchPlan(6, 4, (Grid(4, 28),)).state_dict()
    with pytest.raises(Exception, match="not a multiple of data.repeated_aug 3"):
        BatchPlan(6, 4, (Grid(4, 28),), repeats=3)
