"""Clip sources over annotation files, decoded by the data pipeline (``data.source: csv``)."""

from __future__ import annotations

import torch

from fluxvit.data.transforms import EvalTransform, TrainTransform
from fluxvit.flux.grid import Grid


class VideoFileSource:
    """Adapts the data pipeline's datasets to the trainer's :class:`~fluxvit.train.data.ClipSource`.

    Training clips come from ``VideoClipDataset`` (segment sampling, then ``transform``),
    seeded from the trainer's per-clip generator; validation clips are the central view
    (middle clip, centre crop). A broken file raises :class:`~fluxvit.errors.VideoError`, which
    the trainer counts and replaces.
    """

    def __init__(self, annotations, transform: TrainTransform) -> None:
        from fluxvit.data.datasets import VideoClipDataset

        self.train_set = VideoClipDataset(annotations, transform=transform)
        self.eval_transform = EvalTransform(num_crops=1)
        n = len(self.train_set.records)
        self.classes = list(annotations.classes) if annotations.classes else [str(i) for i in range(_num_labels(
            self.train_set.records, n))]

    def __len__(self) -> int:
        return len(self.train_set)

    def clip(self, index: int, grid: Grid, generator: torch.Generator, train: bool) -> tuple[torch.Tensor, int]:
        """(3, T, H, W) normalised clip of video ``index`` on ``grid``, and its label."""
        if train:
            seed = int(torch.randint(2**62, (), generator=generator))
            sample = self.train_set[(index, grid, seed)]
            return sample.video, sample.label
        ds = self.train_set
        record = ds.records[index]
        views = ds.sampler.views(ds.reader.num_frames(record.path), grid.frames, 1)  # (1, T)
        frames = ds.reader.read(record.path, views[0])
        return self.eval_transform(frames, grid.height)[0], record.label


def _num_labels(records, n: int) -> int:
    return max(r.label for r in records) + 1 if n else 0


def csv_sources(train: str, val: str | None, root: str | None, transform: TrainTransform):
    """(train, val) clip sources from annotation files (``classes.txt`` beside them if present);
    ``transform`` makes the training clips (validation uses the centre view)."""
    from fluxvit.data.annotations import read_annotations

    train_source = VideoFileSource(read_annotations(train, root), transform)
    val_source = VideoFileSource(read_annotations(val, root), transform) if val else None
    if val_source is not None and not val_source.classes == train_source.classes:
        val_source.classes = train_source.classes
    return train_source, val_source
