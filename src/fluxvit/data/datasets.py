"""Test-time datasets, and the one way broken videos are skipped and counted.

:class:`VideoViewDataset` is assembled from parts (annotations + a video reader + a frame
sampler + a transform) and indexed by the video's position; it returns all the video's views
(clips x crops) at once, so one batch row is one video. (Training clips come from
:mod:`fluxvit.data.sources` through the batch planner, :mod:`fluxvit.data.batches`.)

The broken-clip policy, everywhere: a video that raises :class:`~fluxvit.errors.VideoError` is
skipped, counted and named, never fatal. :class:`BrokenClips` is the tally (a count and the first
messages, logged as one warning). In a test loader, :class:`SkipBroken` turns the error into a
:class:`BrokenClip` marker that :func:`collate_clips` drops and records in the batch (the same in
worker processes) and :class:`CountBroken` around the loader adds them up per pass; training
replaces a broken clip instead of dropping it (batches stay rectangular) and tallies the same way.

Typical test loader::

    ann = read_annotations("val.csv")
    data = SkipBroken(VideoViewDataset(ann, Grid(8, 224), num_clips=4, transform=EvalTransform(3)))
    loader = CountBroken(DataLoader(data, batch_size=1, collate_fn=collate_clips, num_workers=2))
    for batch in loader:            # ClipBatch: video (B, V, 3, T, R, R), label (B,), index (B,)
        ...
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch
from torch.utils.data import Dataset

from fluxvit.data.annotations import Annotations, VideoRecord
from fluxvit.data.sampling import SegmentSampler
from fluxvit.data.transforms import EvalTransform
from fluxvit.data.video import PyAVReader, VideoReader
from fluxvit.errors import ConfigError, VideoError
from fluxvit.flux.grid import Grid

log = logging.getLogger(__name__)


class FrameSampler(Protocol):
    """Frame indices for a clip (see :mod:`fluxvit.data.sampling`)."""

    def sample(self, num_frames: int, t: int, generator: torch.Generator) -> torch.Tensor: ...

    def views(self, num_frames: int, t: int, num_clips: int) -> torch.Tensor: ...


class Sample(NamedTuple):
    """One dataset item: ``video`` float (3, T, H, W) for training or (V, 3, T, H, W) for testing,
    its ``label`` and ``index`` (position in the annotation list: the video id)."""

    video: torch.Tensor
    label: int
    index: int


class BrokenClip(NamedTuple):
    """Marker for a clip that could not be read: its ``index`` and the error ``message``."""

    index: int
    message: str


def records_of(annotations: Annotations | Sequence[VideoRecord]) -> tuple[VideoRecord, ...]:
    """The records of an annotation file (or a plain list of them); at least one."""
    records = tuple(annotations.records if isinstance(annotations, Annotations) else annotations)
    if not records:
        raise ConfigError("a dataset needs at least one annotated video")
    return records


class VideoViewDataset(Dataset):
    """Test views: ``dataset[i]`` -> :class:`Sample` with video (num_clips * num_crops, 3, T, R, R),
    clip-major (views ``c * num_crops + k``), for the square ``grid`` (T, R)."""

    def __init__(
        self,
        annotations: Annotations | Sequence[VideoRecord],
        grid: Grid,
        reader: VideoReader | None = None,
        sampler: FrameSampler | None = None,
        num_clips: int = 4,
        transform: EvalTransform | None = None,
    ) -> None:
        if grid.height != grid.width:
            raise ConfigError(f"test views are square crops; grid {grid} is not square")
        self.records = records_of(annotations)
        self.grid = grid
        self.reader = reader if reader is not None else PyAVReader()
        self.sampler = sampler if sampler is not None else SegmentSampler()
        self.num_clips = num_clips
        self.transform = transform if transform is not None else EvalTransform(num_crops=3)

    @property
    def num_views(self) -> int:
        return self.num_clips * self.transform.num_crops

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        index = int(index)
        record = self.records[index]
        n = self.reader.num_frames(record.path)
        idx = self.sampler.views(n, self.grid.frames, self.num_clips)  # (K, T)
        # one read for all clips: overlapping GOPs are decoded once
        frames = self.reader.read(record.path, idx.flatten()).unflatten(0, idx.shape)  # (K, T, H, W, 3)
        views = torch.cat([self.transform(clip, self.grid.height) for clip in frames])  # (K * crops, 3, T, R, R)
        return Sample(views, record.label, index)


class SkipBroken(Dataset):
    """Wraps a dataset so that a :class:`VideoError` becomes a :class:`BrokenClip` marker (for
    :func:`collate_clips` to drop and record) instead of killing the DataLoader worker."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        return getattr(self.__dict__["dataset"], name)  # records, reader, ... of the wrapped dataset

    def __getitem__(self, key) -> Sample | BrokenClip:
        try:
            return self.dataset[key]
        except VideoError as exc:
            log.debug("broken clip %s: %s", key, exc)
            return BrokenClip(int(key), str(exc))


@dataclass
class ClipBatch:
    """A collated batch: ``video`` float (B, 3, T, H, W) (training) or (B, V, 3, T, H, W) (testing),
    ``label`` and ``index`` int64 (B,), and ``broken``: the messages of clips dropped from it.
    B may be 0 when every clip of the batch was broken (then ``video`` is None)."""

    video: torch.Tensor | None
    label: torch.Tensor
    index: torch.Tensor
    broken: tuple[str, ...] = ()
    broken_index: tuple[int, ...] = ()  # the dataset index of each broken clip, in ``broken``'s order

    def __len__(self) -> int:
        return int(self.label.numel())

    @property
    def grid(self) -> Grid | None:
        """The batch's sampling grid (T, H, W), read from the video's shape."""
        if self.video is None:
            return None
        t, h, w = self.video.shape[-3:]
        return Grid(int(t), int(h), int(w))

    def pin_memory(self) -> ClipBatch:
        """For ``DataLoader(pin_memory=True)``."""
        video = self.video.pin_memory() if self.video is not None else None
        return ClipBatch(video, self.label.pin_memory(), self.index.pin_memory(), self.broken, self.broken_index)


def collate_clips(items: Sequence[Sample | BrokenClip]) -> ClipBatch:
    """Stack :class:`Sample` items into a :class:`ClipBatch`, dropping and recording broken ones."""
    good = [s for s in items if isinstance(s, Sample)]
    bad = [b for b in items if isinstance(b, BrokenClip)]
    broken, broken_index = tuple(b.message for b in bad), tuple(b.index for b in bad)
    if not good:
        empty = torch.empty(0, dtype=torch.long)
        return ClipBatch(None, empty, empty.clone(), broken, broken_index)
    return ClipBatch(
        torch.stack([s.video for s in good]),
        torch.tensor([s.label for s in good], dtype=torch.long),
        torch.tensor([s.index for s in good], dtype=torch.long),
        broken,
        broken_index,
    )


class BrokenClips:
    """A tally of broken clips: how many, and the first ``show`` messages for the warning."""

    def __init__(self, name: str = "data", show: int = 3) -> None:
        self.name, self.show = name, show
        self.count = 0
        self.messages: list[str] = []

    def add(self, messages: Iterable[str]) -> None:
        for message in messages:
            self.count += 1
            if len(self.messages) < self.show:
                self.messages.append(message)

    def report(self, when: str = "") -> str | None:
        """Log and return one summary line (None when nothing was skipped)."""
        if not self.count:
            return None
        more = f" (+{self.count - len(self.messages)} more)" if self.count > len(self.messages) else ""
        line = f"{self.name}: skipped {self.count} broken clip(s){when}: {'; '.join(self.messages)}{more}"
        log.warning(line)
        return line


class CountBroken:
    """Iterate a DataLoader of :class:`ClipBatch`, skipping empty batches and counting broken clips.

    After (or during) each pass, ``skipped`` holds that pass's messages and ``total_skipped`` the
    count over all passes; at the end of a pass with broken clips one warning is logged with the
    count and the first few messages (never fatal, never silent).
    """

    def __init__(self, loader: Iterable[ClipBatch], name: str = "data", show: int = 3) -> None:
        self.loader = loader
        self.name = name
        self.show = show
        self.skipped: list[str] = []
        self.total_skipped = 0
        self.epochs = 0

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[ClipBatch]:
        self.skipped = []
        for batch in self.loader:
            if batch.broken:
                self.skipped.extend(batch.broken)
                self.total_skipped += len(batch.broken)
            if len(batch):
                yield batch
        self.epochs += 1
        self.report()

    def report(self) -> str | None:
        """Log and return this pass's summary line (None when nothing was skipped)."""
        tally = BrokenClips(self.name, self.show)
        tally.add(self.skipped)
        return tally.report(f" in epoch {self.epochs}")
