"""Clip sources: where training and validation clips come from.

A clip source is anything with ``classes``, ``__len__`` and ``clip(index, grid, generator, train)
-> (video (3, T, R, R) float, label)``: training clips are segment-sampled and augmented with
``generator``; validation clips are the central view (middle clip, centre crop). Sources that
also have ``train_clips(index, grid, generator, repeats) -> (videos, label)`` support repeated
augmentation (the release's ``--num_sample``): one frame draw, decoded once, augmented
``repeats`` times (``clip(..., train=True)`` is its first). A broken video
raises :class:`~fluxvit.errors.VideoError`; the batch planner (:mod:`fluxvit.data.batches`)
skips, counts and replaces it.

* :class:`TensorClipSource` holds decoded clips in memory (tests, the synthetic benchmark
  rendered on the fly: :func:`synthetic_source`);
* :class:`VideoFileSource` reads an annotation file's videos with a :class:`VideoReader`, a frame
  sampler and a transform (:func:`csv_sources` builds the train and val pair).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import torch

from fluxvit.data.annotations import Annotations, VideoRecord
from fluxvit.data.datasets import records_of
from fluxvit.data.sampling import SegmentSampler, segment_indices, segment_views
from fluxvit.data.transforms import EvalTransform, TrainTransform
from fluxvit.data.video import PyAVReader, VideoReader
from fluxvit.errors import ConfigError
from fluxvit.flux.grid import Grid

log = logging.getLogger(__name__)


class ClipSource(Protocol):
    """What the trainer reads clips from."""

    classes: list[str]

    def __len__(self) -> int: ...

    def clip(self, index: int, grid: Grid, generator: torch.Generator | None, train: bool) -> tuple[torch.Tensor, int]:
        """Clip ``index`` sampled on ``grid``: float (3, T, H, W) normalised, and its label."""
        ...


def train_clips(source: ClipSource, index: int, grid: Grid, generator: torch.Generator,
                repeats: int = 1) -> tuple[list[torch.Tensor], int]:
    """``repeats`` augmented training clips of video ``index`` (one frame draw and decode), and its
    label. One clip is the source's ``clip`` (so a source that overrides only ``clip`` is read
    through it); more need its ``train_clips`` (without one: a :class:`ConfigError`)."""
    if repeats == 1:
        video, label = source.clip(index, grid, generator, train=True)
        return [video], label
    if not hasattr(source, "train_clips"):
        raise ConfigError(f"data.repeated_aug {repeats}: {type(source).__name__} cannot augment a clip twice")
    return source.train_clips(index, grid, generator, repeats)


class TensorClipSource:
    """Decoded clips held in memory: ``videos`` a list of uint8 (F, H, W, 3), ``labels`` ints.

    Training clips: segment-random frames through ``transform`` (default: the release's random
    resized crop, no flip); evaluation clips: segment centres, centre crop.
    """

    def __init__(
        self,
        videos: Sequence[torch.Tensor],
        labels: Sequence[int],
        classes: list[str],
        transform: TrainTransform | None = None,
    ) -> None:
        if len(videos) != len(labels):
            raise ValueError(f"{len(videos)} videos but {len(labels)} labels")
        self.videos, self.labels, self.classes = list(videos), [int(v) for v in labels], classes
        self.transform = transform if transform is not None else TrainTransform(flip=0.0)
        self.eval_transform = EvalTransform(num_crops=1, resize=self.transform.resize)

    def __len__(self) -> int:
        return len(self.videos)

    def clip(self, index: int, grid: Grid, generator: torch.Generator | None, train: bool) -> tuple[torch.Tensor, int]:
        if train:
            videos, label = self.train_clips(index, grid, generator)
            return videos[0], label
        frames = self.videos[index]
        idx = segment_views(frames.shape[0], grid.frames, 1)[0]
        return self.eval_transform(frames[idx], grid.height)[0], self.labels[index]

    def train_clips(self, index: int, grid: Grid, generator: torch.Generator,
                    repeats: int = 1) -> tuple[list[torch.Tensor], int]:
        """``repeats`` augmentations of one segment-random frame draw of clip ``index``."""
        frames = self.videos[index]
        picked = frames[segment_indices(frames.shape[0], grid.frames, generator)]
        size = (grid.height, grid.width)
        return [self.transform(picked, size, generator) for _ in range(repeats)], self.labels[index]


def synthetic_source(
    classes: Sequence[str] | None, per_class: int, size: int, frames: int, seed: int, split: int,
    transform: TrainTransform | None = None, variant: str = "default",
) -> TensorClipSource:
    """The synthetic benchmark (``variant``) rendered in memory (no files): ``per_class`` clips of
    each class, seeded by (seed, split, class, i) so train (split 0) and val (split 1) never
    share a clip."""
    from fluxvit.data.synthetic import get_variant, render_clip

    names = list(classes) if classes else list(get_variant(variant).default_classes)
    videos, labels = [], []
    for label, name in enumerate(names):
        for i in range(per_class):
            rng = [seed, split, label, i]
            videos.append(torch.from_numpy(render_clip(name, rng, size=size, frames=frames, variant=variant)))
            labels.append(label)
    return TensorClipSource(videos, labels, names, transform)


class VideoFileSource:
    """The videos of an annotation file, decoded on demand.

    Training clips: ``sampler`` picks the frames (segment sampling), ``reader`` decodes only
    those, ``transform`` crops, flips and normalises them, all seeded by one draw from the
    trainer's per-clip generator. Validation clips: the central view (middle clip, centre
    crop). Class names come from the annotations' ``classes.txt``, else the label ids.
    """

    def __init__(self, annotations: Annotations | Sequence[VideoRecord], transform: TrainTransform | None = None,
                 reader: VideoReader | None = None, sampler: SegmentSampler | None = None) -> None:
        self.records = records_of(annotations)
        names = annotations.classes if isinstance(annotations, Annotations) else None
        self.reader = reader if reader is not None else PyAVReader()
        self.sampler = sampler if sampler is not None else SegmentSampler()
        self.transform = transform if transform is not None else TrainTransform()
        self.eval_transform = EvalTransform(num_crops=1, resize=self.transform.resize)
        self.classes = list(names) if names else [str(i) for i in range(max(r.label for r in self.records) + 1)]

    def __len__(self) -> int:
        return len(self.records)

    def clip(self, index: int, grid: Grid, generator: torch.Generator | None, train: bool) -> tuple[torch.Tensor, int]:
        """(3, T, H, W) normalised clip of video ``index`` on ``grid``, and its label."""
        if train:
            videos, label = self.train_clips(index, grid, generator)
            return videos[0], label
        record = self.records[index]
        n = self.reader.num_frames(record.path)
        frames = self.reader.read(record.path, self.sampler.views(n, grid.frames, 1)[0])
        return self.eval_transform(frames, grid.height)[0], record.label

    def train_clips(self, index: int, grid: Grid, generator: torch.Generator,
                    repeats: int = 1) -> tuple[list[torch.Tensor], int]:
        """``repeats`` augmentations of one decoded segment-random frame draw of video ``index``."""
        record = self.records[index]
        # One draw seeds this clip's own stream (before any read: a broken file consumes the same
        # draws as a good one), so a clip's frames and augmentation depend on nothing else.
        clip_gen = torch.Generator().manual_seed(int(torch.randint(2**62, (), generator=generator)))
        n = self.reader.num_frames(record.path)
        frames = self.reader.read(record.path, self.sampler.sample(n, grid.frames, clip_gen))  # (T, H, W, 3)
        size = (grid.height, grid.width)
        return [self.transform(frames, size, clip_gen) for _ in range(repeats)], record.label


def check_paths(annotations: Annotations) -> None:
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
                cache_bytes: int = 0) -> tuple[VideoFileSource, VideoFileSource | None]:
    """(train, val) clip sources from annotation files (``classes.txt`` beside them if present) or
    folder datasets (``FOLDER/CLASS/video.mp4``, :func:`~fluxvit.data.annotations.read_folder`);
    ``transform`` makes the training clips (validation uses the centre view). ``cache_bytes`` > 0:
    each source keeps up to that many bytes of decoded frames in memory (``CachedReader``)."""
    from fluxvit.data.annotations import read_annotations
    from fluxvit.data.video import CachedReader

    def reader():
        return CachedReader(max_bytes=cache_bytes) if cache_bytes > 0 else None

    annotations = [read_annotations(train, root)]  # a list file or a folder of class folders
    if val:  # class names (a folder's, or name labels) numbered as the training data numbers them
        annotations.append(read_annotations(val, root, known_classes=annotations[0].classes))
    for a in annotations:
        check_paths(a)
    train_source = VideoFileSource(annotations[0], transform, reader())
    val_source = VideoFileSource(annotations[1], transform, reader()) if val else None
    if val_source is not None:
        val_source.classes = train_source.classes  # the model's classes are the training data's
    return train_source, val_source
