"""The Flux batch sampler: one grid per batch, the same on every rank, reproducible and resumable.

Every quantity is a pure function of (seed, epoch, step), never of hidden RNG state:

* the sample order of epoch ``e`` is a permutation seeded by (seed, e); step ``s`` takes the
  ``s``-th global batch of ``batch_size * world_size`` samples, and rank ``r`` its ``r``-th slice,
  so ranks read disjoint samples;
* the grid of step ``s`` is drawn from a generator seeded by (seed, e, s) that does not depend on
  the rank, so all ranks run the same (T, R) and their gradients have the same token budget;
* every clip gets its own augmentation seed from (seed, e, s, position in the global batch).

So the state is just (epoch, step), and a sampler restored with :meth:`load_state_dict` continues
the same sequence exactly. The sampler yields lists of :class:`ClipKey` for a dataset that indexes
by (sample index, grid, seed), e.g. :class:`~fluxvit.data.datasets.VideoClipDataset`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch.utils.data import Sampler

from fluxvit.errors import ConfigError
from fluxvit.flux.grid import FluxGrid, Grid


class ClipKey(NamedTuple):
    """What a training dataset is indexed by: sample ``index``, the batch's ``grid``, and ``seed``
    for the clip's random frame sampling and augmentation."""

    index: int
    grid: Grid
    seed: int


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers; nearby tuples give unrelated streams (a hash, not a sum)."""
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def generator_for(*parts: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded by :func:`derive_seed` of ``parts``."""
    return torch.Generator().manual_seed(derive_seed(*parts))


class FluxBatchSampler(Sampler[list[ClipKey]]):
    """Batches of :class:`ClipKey` with one grid per batch.

    ``grids``: a :class:`FluxGrid` (Flux training), a single :class:`Grid` (the fixed-grid baseline)
    or an explicit sequence of grids. ``budget``: if given, each grid carries this token budget
    (checked against every grid's token count). ``batch_size`` is per rank; the last incomplete
    global batch of an epoch is dropped so every rank runs the same number of equal batches.

    One pass of ``iter()`` runs the rest of the current epoch; when it completes, the sampler moves
    to the next epoch (so ``for epoch: for batch in loader`` needs no ``set_epoch``, though
    :meth:`set_epoch` is there for torch-style loops).

    Resuming: a ``DataLoader`` draws batches ahead of the training loop, so save the state with the
    position the loop has *consumed*: ``sampler.state_dict(epoch=e, step=consumed)``.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        grids: FluxGrid | Grid | Sequence[Grid],
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        budget: int | None = None,
        patch_size: int = 14,
    ) -> None:
        if isinstance(grids, FluxGrid):
            patch_size = grids.patch_size
            grid_list = list(grids.grids)
        elif isinstance(grids, Grid):
            grid_list = [grids]
        else:
            grid_list = list(grids)
        if not grid_list:
            raise ConfigError("the batch sampler needs at least one grid")
        if budget is not None:
            grid_list = [g.with_budget(budget) for g in grid_list]
            for g in grid_list:
                g.num_tokens(patch_size)  # raises if the budget exceeds this grid's tokens
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"bad batch layout: batch_size {batch_size}, rank {rank}, world_size {world_size}")
        if num_samples < batch_size * world_size:
            raise ConfigError(
                f"{num_samples} samples cannot fill one global batch of {batch_size} x {world_size} ranks"
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.grids = tuple(grid_list)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0
        self.step = 0  # batches of the current epoch already handed out

    # -- the pure functions
    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // (self.batch_size * self.world_size)

    def grid_at(self, epoch: int, step: int) -> Grid:
        """The grid of (epoch, step): the same on every rank."""
        if len(self.grids) == 1:
            return self.grids[0]
        g = generator_for(self.seed, epoch, step, 0x6D1D)
        return self.grids[int(torch.randint(len(self.grids), (), generator=g))]

    def order(self, epoch: int) -> torch.Tensor:
        """(num_samples,) the sample order of ``epoch`` (identity when not shuffling)."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        return torch.randperm(self.num_samples, generator=generator_for(self.seed, epoch, 0x5A3E))

    def batch_at(self, epoch: int, step: int, order: torch.Tensor | None = None) -> list[ClipKey]:
        """This rank's batch at (epoch, step)."""
        order = self.order(epoch) if order is None else order
        grid = self.grid_at(epoch, step)
        start = step * self.batch_size * self.world_size + self.rank * self.batch_size
        return [
            ClipKey(int(order[start + j]), grid, derive_seed(self.seed, epoch, step, start + j))
            for j in range(self.batch_size)
        ]

    # -- the iterator
    def __iter__(self) -> Iterator[list[ClipKey]]:
        epoch = self.epoch
        order = self.order(epoch)
        while self.step < self.steps_per_epoch:
            batch = self.batch_at(epoch, self.step, order)
            self.step += 1
            yield batch
        self.epoch, self.step = epoch + 1, 0

    def __len__(self) -> int:
        return self.steps_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch."""
        self.epoch, self.step = int(epoch), 0

    # -- resumption
    def state_dict(self, epoch: int | None = None, step: int | None = None) -> dict:
        """{"epoch", "step", "seed"}; ``epoch``/``step`` override the position handed out (a DataLoader
        runs ahead) with the position the training loop has consumed."""
        return {
            "epoch": self.epoch if epoch is None else int(epoch),
            "step": self.step if step is None else int(step),
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict) -> None:
        if int(state.get("seed", self.seed)) != self.seed:
            raise ConfigError(f"sampler state was saved with seed {state['seed']}, this sampler has seed {self.seed}")
        step = int(state["step"])
        if not 0 <= step <= self.steps_per_epoch:
            raise ConfigError(f"sampler state step {step} is outside an epoch of {self.steps_per_epoch} steps")
        self.epoch, self.step = int(state["epoch"]), step
