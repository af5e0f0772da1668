"""Process-group setup for ``torchrun`` (gloo on CPU, nccl on CUDA) and rank helpers, for
training (DDP) and for evaluation and Token Optimization (videos sharded across ranks, their
outcomes gathered)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fluxvit.placement import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job; ``world == 1`` means no process group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup(device_name: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        log.debug("rank %d/%d joined (%s)", rank, world, device)
    return DistInfo(rank, world, local_rank, device)


def current() -> DistInfo:
    """The job this process belongs to (a lone process when no process group is set up)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def teardown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True if ``flag`` is true on any rank (every rank must call it)."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_over_ranks(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average scalar metrics across ranks (every rank must call it with the same keys)."""
    if not info.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return dict(zip(keys, (t / info.world).tolist()))


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def shard(items: list, info: DistInfo) -> list:
    """This rank's share of ``items``: every ``world``-th one from position ``rank``."""
    return items[info.rank::info.world] if info.distributed else items


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not info.distributed:
        return [obj]
    out: list = [None] * info.world
    dist.all_gather_object(out, obj)
    return out
