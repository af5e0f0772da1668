"""Batches for training: which clips, on which grid, at each micro-step - deterministically.

The plan is a pure function of (seed, micro-step, rank): the grid of micro-step m is drawn
from a generator seeded by (seed, m), so every rank uses the same grid; the samples are the
m-th slice of a stream of per-epoch permutations seeded by (seed, epoch), and rank r takes its
own contiguous part of the global batch, so ranks read disjoint samples. Resuming therefore
needs only the micro-step, and the same global batch gives the same samples on any number of
ranks.

A clip source is anything with ``classes``, ``__len__`` and ``clip(index, grid, generator,
train) -> (video (3, T, R, R) float, label)``; :class:`TensorClipSource` holds decoded clips in
memory (tests, the synthetic benchmark rendered on the fly). A clip that raises
:class:`~fluxvit.errors.VideoError` is skipped, counted and replaced by another clip, so
batches stay full and rectangular.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from fluxvit.data.sampling import segment_indices, segment_views
from fluxvit.data.transforms import EvalTransform, TrainTransform
from fluxvit.errors import VideoError
from fluxvit.flux.grid import Grid

log = logging.getLogger(__name__)

_MAX_REPLACEMENTS = 16  # broken clips replaced per slot before the batch is given up


class ClipSource(Protocol):
    """What the trainer reads clips from."""

    classes: list[str]

    def __len__(self) -> int: ...

    def clip(self, index: int, grid: Grid, generator: torch.Generator, train: bool) -> tuple[torch.Tensor, int]:
        """Clip ``index`` sampled on ``grid``: float (3, T, H, W) normalised, and its label."""
        ...


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64-style), so nearby tuples give unrelated streams."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x ^= (int(p) + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2)) & 0xFFFFFFFFFFFFFFFF
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


def seeded(*parts: int) -> torch.Generator:
    """A CPU generator seeded from ``parts``."""
    return torch.Generator().manual_seed(_mix_seed(*parts))


# ----------------------------------------------------------------------------- in-memory clips
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
        self.eval_transform = EvalTransform(num_crops=1)

    def __len__(self) -> int:
        return len(self.videos)

    def clip(self, index: int, grid: Grid, generator: torch.Generator, train: bool) -> tuple[torch.Tensor, int]:
        frames = self.videos[index]
        if train:
            idx = segment_indices(frames.shape[0], grid.frames, generator)
            return self.transform(frames[idx], (grid.height, grid.width), generator), self.labels[index]
        idx = segment_views(frames.shape[0], grid.frames, 1)[0]
        return self.eval_transform(frames[idx], grid.height)[0], self.labels[index]


def synthetic_source(
    classes: Sequence[str] | None, per_class: int, size: int, frames: int, seed: int, split: int,
    transform: TrainTransform | None = None,
) -> TensorClipSource:
    """The synthetic benchmark rendered in memory (no files): ``per_class`` clips of each class,
    seeded by (seed, split, class, i) so train (split 0) and val (split 1) never share a clip."""
    from fluxvit.data.synthetic import DEFAULT_CLASSES, render_clip

    names = list(classes) if classes else list(DEFAULT_CLASSES)
    videos, labels = [], []
    for label, name in enumerate(names):
        for i in range(per_class):
            rng = [seed, split, label, i]
            videos.append(torch.from_numpy(render_clip(name, rng, size=size, frames=frames)))
            labels.append(label)
    return TensorClipSource(videos, labels, names, transform)


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class BatchPlan:
    """Which grid and samples each micro-step uses (see the module docstring).

    ``grids``: the admissible grids (one: fixed-grid training); ``batch_size``: clips per rank.
    """

    num_samples: int
    batch_size: int
    grids: tuple[Grid, ...]
    seed: int = 0
    rank: int = 0
    world: int = 1

    def grid(self, micro_step: int) -> Grid:
        """The grid of ``micro_step`` (identical on every rank)."""
        if len(self.grids) == 1:
            return self.grids[0]
        g = seeded(self.seed, 1, micro_step)
        return self.grids[int(torch.randint(len(self.grids), (), generator=g))]

    def _permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.num_samples, generator=seeded(self.seed, 2, epoch))

    def indices(self, micro_step: int) -> list[int]:
        """This rank's sample indices for ``micro_step``: its part of the global batch."""
        global_batch = self.batch_size * self.world
        start = micro_step * global_batch + self.rank * self.batch_size
        out, perm_epoch, perm = [], -1, None
        for pos in range(start, start + self.batch_size):
            epoch, offset = divmod(pos, self.num_samples)
            if epoch != perm_epoch:
                perm, perm_epoch = self._permutation(epoch), epoch
            out.append(int(perm[offset]))
        return out

    def state_dict(self) -> dict:
        return {"seed": self.seed, "num_samples": self.num_samples, "global_batch": self.batch_size * self.world,
                "grids": [str(g) for g in self.grids]}


@dataclass
class Batch:
    """One micro-batch: video (B, 3, T, R, R), labels (B,), its grid, and broken clips skipped."""

    video: torch.Tensor
    labels: torch.Tensor
    grid: Grid
    skipped: int = 0


class PlannedBatches(torch.utils.data.Dataset):
    """Map-style dataset whose item m is micro-batch m of ``plan`` read from ``source``; a
    DataLoader with ``batch_size=None`` over micro-step numbers runs it in worker processes."""

    def __init__(self, source: ClipSource, plan: BatchPlan) -> None:
        self.source, self.plan = source, plan

    def __len__(self) -> int:
        return 2**62  # micro-steps are unbounded; the trainer asks for the range it needs

    def __getitem__(self, micro_step: int) -> Batch:
        plan = self.plan
        grid = plan.grid(micro_step)
        videos, labels, skipped = [], [], 0
        for slot, index in enumerate(plan.indices(micro_step)):
            # Seeded by the position in the *global* batch: the same global batch gets the
            # same crops and flips on any number of ranks.
            gen = seeded(plan.seed, 3, micro_step, plan.rank * plan.batch_size + slot)
            for _ in range(_MAX_REPLACEMENTS):
                try:
                    video, label = self.source.clip(index, grid, gen, train=True)
                    break
                except VideoError as e:
                    skipped += 1
                    log.warning("skipping broken clip %d: %s", index, e)
                    index = int(torch.randint(len(self.source), (), generator=gen))
            else:
                raise VideoError(f"micro-step {micro_step}: {_MAX_REPLACEMENTS} broken clips in a row")
            videos.append(video)
            labels.append(label)
        return Batch(torch.stack(videos), torch.tensor(labels, dtype=torch.long), grid, skipped)


def batch_loader(source: ClipSource, plan: BatchPlan, start: int, stop: int, workers: int = 0):
    """Micro-batches ``start`` .. ``stop`` - 1 of ``plan``, in order, from ``workers`` processes."""
    dataset = PlannedBatches(source, plan)
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=range(start, stop), num_workers=workers,
        collate_fn=_identity, prefetch_factor=2 if workers else None,
        # Its own generator: creating the iterator must not draw from the global RNG, whose
        # state is checkpointed (a resumed run would otherwise shift its drop-path stream).
        generator=torch.Generator(),
    )


def _identity(batch: Batch) -> Batch:
    """DataLoader collate for already-batched items (a named function pickles into workers)."""
    return batch
