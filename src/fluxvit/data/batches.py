"""Training batches: which clips, on which grid, at each micro-step - deterministically.

This is the one batch planner (and :func:`seeded` the one seed function) of the project. The
plan is a pure function of (seed, micro-step, rank): the grid of micro-step m is drawn from a
generator seeded by (seed, m), so every rank uses the same grid (``grid_per="step"``), or by
(seed, m, rank), so each rank draws its own and one optimiser step mixes as many grids as there
are ranks (``grid_per="rank_batch"``: the release's behaviour, a grid per local batch seeded by
seed + rank). Either way every clip of a batch has the same token count, so batches stay
rectangular. The samples are the m-th slice
of a stream of per-epoch permutations seeded by (seed, epoch), and rank r takes its own
contiguous part of the global batch, so ranks read disjoint samples. Resuming therefore needs
only the micro-step, and the same global batch gives the same samples on any number of ranks.

Clips come from a :class:`~fluxvit.data.sources.ClipSource`. A clip that raises
:class:`~fluxvit.errors.VideoError` is skipped, counted and replaced by another clip drawn from
the same seeded stream, so batches stay full and rectangular; the messages travel with the
batch (:attr:`Batch.broken`) for the trainer's :class:`~fluxvit.data.datasets.BrokenClips` tally.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from fluxvit.data.sources import ClipSource, train_clips
from fluxvit.errors import ConfigError, VideoError
from fluxvit.flux.grid import GRID_PER, Grid

log = logging.getLogger(__name__)

MAX_REPLACEMENTS = 16  # broken clips replaced per slot before the batch is given up


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64-style), so nearby tuples give unrelated streams."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x ^= (int(p) + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2)) & 0xFFFFFFFFFFFFFFFF
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


def seeded(*parts: int) -> torch.Generator:
    """A CPU generator seeded from ``parts`` (e.g. seed, stream id, step, rank)."""
    return torch.Generator().manual_seed(_mix_seed(*parts))


@dataclass(frozen=True)
class BatchPlan:
    """Which grid and samples each micro-step uses (see the module docstring).

    ``grids``: the admissible grids (one: fixed-grid training); ``batch_size``: clips per rank,
    which hold ``batch_size / repeats`` videos, each augmented ``repeats`` times (repeated
    augmentation, the release's ``--num_sample``: the samples of a step are the videos).
    """

    num_samples: int
    batch_size: int
    grids: tuple[Grid, ...]
    seed: int = 0
    rank: int = 0
    world: int = 1
    grid_per: str = "step"
    repeats: int = 1

    def __post_init__(self) -> None:
        if self.grid_per not in GRID_PER:
            raise ConfigError(f"flux.grid_per {self.grid_per!r} is not one of {', '.join(GRID_PER)}")
        if self.repeats < 1 or self.batch_size % self.repeats:
            raise ConfigError(f"data.batch_size {self.batch_size} is not a multiple of data.repeated_aug "
                              f"{self.repeats} (each video's augmentations share a batch)")

    @property
    def videos_per_batch(self) -> int:
        """Distinct videos in one rank's micro-batch."""
        return self.batch_size // self.repeats

    def grid(self, micro_step: int) -> Grid:
        """The grid of ``micro_step`` on this rank (the same on every rank unless ``grid_per`` is
        ``rank_batch``)."""
        if len(self.grids) == 1:
            return self.grids[0]
        g = seeded(self.seed, 1, micro_step) if self.grid_per == "step" else seeded(self.seed, 1, micro_step,
                                                                                     self.rank)
        return self.grids[int(torch.randint(len(self.grids), (), generator=g))]

    def _permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.num_samples, generator=seeded(self.seed, 2, epoch))

    def indices(self, micro_step: int) -> list[int]:
        """This rank's sample (video) indices for ``micro_step``: its part of the global batch."""
        per_rank = self.videos_per_batch
        start = micro_step * per_rank * self.world + self.rank * per_rank
        out, perm_epoch, perm = [], -1, None
        for pos in range(start, start + per_rank):
            epoch, offset = divmod(pos, self.num_samples)
            if epoch != perm_epoch:
                perm, perm_epoch = self._permutation(epoch), epoch
            out.append(int(perm[offset]))
        return out

    def clip_generator(self, micro_step: int, slot: int) -> torch.Generator:
        """The augmentation stream of video ``slot`` of this rank's batch (all its repeats): seeded by
        its position in the *global* batch, so the same global batch gets the same crops on any
        number of ranks."""
        return seeded(self.seed, 3, micro_step, self.rank * self.videos_per_batch + slot)

    def state_dict(self) -> dict:
        state = {"seed": self.seed, "num_samples": self.num_samples, "global_batch": self.batch_size * self.world,
                 "grids": [str(g) for g in self.grids]}
        if self.grid_per != "step":  # (a run of the default plan resumes from a checkpoint made before this key)
            state |= {"grid_per": self.grid_per, "world": self.world}
        if self.repeats != 1:  # (the same)
            state["repeats"] = self.repeats
        return state


@dataclass
class Batch:
    """One micro-batch: video (B, 3, T, R, R), labels (B,), its grid, and the messages of the
    broken clips that were skipped (and replaced) to fill it."""

    video: torch.Tensor
    labels: torch.Tensor
    grid: Grid
    broken: tuple[str, ...] = ()


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
        videos, labels, broken = [], [], []
        for slot, index in enumerate(plan.indices(micro_step)):
            gen = plan.clip_generator(micro_step, slot)
            for _ in range(MAX_REPLACEMENTS):
                try:
                    clips, label = train_clips(self.source, index, grid, gen, plan.repeats)
                    break
                except VideoError as e:
                    broken.append(str(e))
                    index = int(torch.randint(len(self.source), (), generator=gen))
            else:
                raise VideoError(f"micro-step {micro_step}: {MAX_REPLACEMENTS} broken clips in a row "
                                 f"(the last: {broken[-1]})")
            videos.extend(clips)
            labels.extend([label] * len(clips))
        return Batch(torch.stack(videos), torch.tensor(labels, dtype=torch.long), grid, tuple(broken))


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
