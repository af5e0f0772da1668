"""Datasets assembled from parts: annotations + a video reader + a frame sampler + a transform.

* :class:`VideoClipDataset` (training) is indexed by ``(sample index, grid[, seed])`` — what
  :class:`~fluxvit.data.flux_sampler.FluxBatchSampler` yields — and returns one clip on that grid.
* :class:`VideoViewDataset` (testing) is indexed by the video's position and returns all its views
  (clips x crops) at once, so one batch row is one video.

A broken video makes ``dataset[key]`` raise :class:`~fluxvit.errors.VideoError` naming the file.
Inside a DataLoader, wrap the dataset in :class:`SkipBroken` and collate with :func:`collate_clips`:
a broken clip becomes a :class:`BrokenClip` marker that the collate function drops and records in
the batch (``ClipBatch.broken``), which works the same in worker processes; :class:`CountBroken`
around the loader adds the records up and logs them at the end of every epoch.

Typical training loader (Flux)::

    ann = read_annotations("train.csv")
    data = SkipBroken(VideoClipDataset(ann, PyAVReader(), SegmentSampler(), TrainTransform()))
    batches = FluxBatchSampler(len(data), batch_size=8, grids=FluxGrid(), budget=2048, seed=0)
    loader = CountBroken(DataLoader(data, batch_sampler=batches, collate_fn=collate_clips, num_workers=2))
    for batch in loader:            # ClipBatch: video (B, 3, T, R, R), label (B,), grid
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
from fluxvit.data.flux_sampler import ClipKey
from fluxvit.data.sampling import SegmentSampler
from fluxvit.data.transforms import EvalTransform, TrainTransform
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


def _records(annotations: Annotations | Sequence[VideoRecord]) -> tuple[VideoRecord, ...]:
    records = tuple(annotations.records if isinstance(annotations, Annotations) else annotations)
    if not records:
        raise ConfigError("a dataset needs at least one annotated video")
    return records


class VideoClipDataset(Dataset):
    """Training clips: ``dataset[(index, grid, seed)]`` -> :class:`Sample` with video (3, T, H, W)
    on ``grid`` (T = grid.frames, H x W = grid.height x grid.width), normalised.

    ``seed`` seeds the frame sampling and augmentation of that clip; with a 2-tuple ``(index, grid)``
    the seed comes from torch's global generator (which DataLoader seeds per worker).
    """

    def __init__(
        self,
        annotations: Annotations | Sequence[VideoRecord],
        reader: VideoReader | None = None,
        sampler: FrameSampler | None = None,
        transform: TrainTransform | None = None,
    ) -> None:
        self.records = _records(annotations)
        self.reader = reader if reader is not None else PyAVReader()
        self.sampler = sampler if sampler is not None else SegmentSampler()
        self.transform = transform if transform is not None else TrainTransform()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: ClipKey | tuple) -> Sample:
        index, grid = int(key[0]), key[1]
        if not isinstance(grid, Grid):
            raise ConfigError(f"a training dataset is indexed by (index, Grid[, seed]), got {key!r}")
        seed = int(key[2]) if len(key) > 2 else int(torch.randint(2**62, ()))
        generator = torch.Generator().manual_seed(seed)
        record = self.records[index]
        n = self.reader.num_frames(record.path)
        frames = self.reader.read(record.path, self.sampler.sample(n, grid.frames, generator))  # (T, H, W, 3)
        video = self.transform(frames, (grid.height, grid.width), generator)
        return Sample(video, record.label, index)


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
        self.records = _records(annotations)
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
            index = int(key[0]) if isinstance(key, tuple) else int(key)
            log.debug("broken clip %d: %s", index, exc)
            return BrokenClip(index, str(exc))


@dataclass
class ClipBatch:
    """A collated batch: ``video`` float (B, 3, T, H, W) (training) or (B, V, 3, T, H, W) (testing),
    ``label`` and ``index`` int64 (B,), and ``broken``: the messages of clips dropped from it.
    B may be 0 when every clip of the batch was broken (then ``video`` is None)."""

    video: torch.Tensor | None
    label: torch.Tensor
    index: torch.Tensor
    broken: tuple[str, ...] = ()

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
        return ClipBatch(video, self.label.pin_memory(), self.index.pin_memory(), self.broken)


def collate_clips(items: Sequence[Sample | BrokenClip]) -> ClipBatch:
    """Stack :class:`Sample` items into a :class:`ClipBatch`, dropping and recording broken ones."""
    good = [s for s in items if isinstance(s, Sample)]
    broken = tuple(b.message for b in items if isinstance(b, BrokenClip))
    if not good:
        empty = torch.empty(0, dtype=torch.long)
        return ClipBatch(None, empty, empty.clone(), broken)
    return ClipBatch(
        torch.stack([s.video for s in good]),
        torch.tensor([s.label for s in good], dtype=torch.long),
        torch.tensor([s.index for s in good], dtype=torch.long),
        broken,
    )


class CountBroken:
    """Iterate a DataLoader of :class:`ClipBatch`, skipping empty batches and counting broken clips.

    After (or during) each pass, ``skipped`` holds that epoch's messages and ``total_skipped`` the
    count over all epochs; at the end of a pass with broken clips a warning is logged with the
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
        """Log and return this epoch's summary line (None when nothing was skipped)."""
        if not self.skipped:
            return None
        first = "; ".join(self.skipped[: self.show])
        more = f" (+{len(self.skipped) - self.show} more)" if len(self.skipped) > self.show else ""
        line = f"{self.name}: skipped {len(self.skipped)} broken clip(s) in epoch {self.epochs}: {first}{more}"
        log.warning(line)
        return line
