"""Clip sources over annotation files, decoded by the data pipeline (``data.source: csv``)."""

from __future__ import annotations

import logging

import torch

from fluxvit.data.transforms import EvalTransform, TrainTransform
from fluxvit.errors import ConfigError
from fluxvit.flux.grid import Grid

log = logging.getLogger(__name__)


class VideoFileSource:
    """Adapts the data pipeline's datasets to the trainer's :class:`~fluxvit.train.data.ClipSource`.

    Training clips come from ``VideoClipDataset`` (segment sampling, then ``transform``),
    seeded from the trainer's per-clip generator; validation clips are the central view
    (middle clip, centre crop). A broken file raises :class:`~fluxvit.errors.VideoError`, which
    the trainer counts and replaces.
    """

    def __init__(self, annotations, transform: TrainTransform, reader=None) -> None:
        from fluxvit.data.datasets import VideoClipDataset

        self.train_set = VideoClipDataset(annotations, reader=reader, transform=transform)
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


def check_paths(annotations) -> None:
    """Fail before any work when none of an annotation file's videos exist (a wrong root, most
    likely); warn when some are missing (those are skipped and counted as broken)."""
    missing = [r for r in annotations.records if not r.path.is_file()]
    if annotations.records and len(missing) == len(annotations.records):
        raise ConfigError(f"{annotations.csv}: none of its {len(missing)} videos exist (first: {missing[0].path}); "
                          f"set data.root to the folder its paths are relative to")
    if missing:
        log.warning("%s: %d of %d videos are missing and will be skipped (first: %s)", annotations.csv,
                    len(missing), len(annotations.records), missing[0].path)


def csv_sources(train: str, val: str | None, root: str | None, transform: TrainTransform,
                cache_bytes: int = 0):
    """(train, val) clip sources from annotation files (``classes.txt`` beside them if present);
    ``transform`` makes the training clips (validation uses the centre view). ``cache_bytes`` > 0:
    each source keeps up to that many bytes of decoded frames in memory (``CachedReader``)."""
    from fluxvit.data.annotations import read_annotations
    from fluxvit.data.video import CachedReader

    def reader():
        return CachedReader(max_bytes=cache_bytes) if cache_bytes > 0 else None

    annotations = [read_annotations(path, root) for path in (train, val) if path]
    for a in annotations:
        check_paths(a)
    train_source = VideoFileSource(annotations[0], transform, reader())
    val_source = VideoFileSource(annotations[1], transform, reader()) if val else None
    if val_source is not None and not val_source.classes == train_source.classes:
        val_source.classes = train_source.classes
    return train_source, val_source
