"""Single-view validation during training: accuracy at one grid and budget per head."""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

from fluxvit.data.datasets import BrokenClips
from fluxvit.data.sources import ClipSource
from fluxvit.distributed import DistInfo
from fluxvit.errors import VideoError
from fluxvit.flux.grid import Grid
from fluxvit.models.fluxvit import FluxViT

log = logging.getLogger(__name__)


@torch.no_grad()
def validate(
    model: FluxViT,
    source: ClipSource,
    grid: Grid,
    budgets: list[int | None],
    info: DistInfo,
    batch_size: int = 16,
    max_clips: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Top-1 accuracy (%) of ``model`` on ``source`` (central view on ``grid``), one entry
    ``acc@N`` per budget N (``None``: every token; head nearest N). Ranks split the clips and
    the counts are summed, so every rank returns the same numbers."""
    was_training = model.training
    model.eval()
    count = min(len(source), max_clips) if max_clips else len(source)
    mine = list(range(info.rank, count, info.world))
    correct = torch.zeros(len(budgets), dtype=torch.float64)
    nonfinite = [0] * len(budgets)
    broken = BrokenClips("validation")
    for start in range(0, len(mine), batch_size):
        clips = []
        for i in mine[start:start + batch_size]:
            try:
                clips.append(source.clip(i, grid, None, train=False))
            except VideoError as e:  # skipped and counted, as everywhere
                broken.add([str(e)])
        if not clips:
            continue
        video = torch.stack([c[0] for c in clips]).to(info.device)
        labels = torch.tensor([c[1] for c in clips], device=info.device)
        with torch.autocast(info.device.type, dtype=autocast_dtype or torch.bfloat16,
                            enabled=autocast_dtype is not None):
            for j, budget in enumerate(budgets):
                logits = model(video, num_tokens=budget)
                finite = torch.isfinite(logits).all(-1)
                nonfinite[j] += int((~finite).sum())  # counted wrong, and said (fp16 overflow, diverged weights)
                correct[j] += ((logits.argmax(-1) == labels) & finite).sum().item()
    broken.report()
    total = torch.tensor([float(len(mine) - broken.count)], dtype=torch.float64)
    if info.distributed:
        both = torch.cat([correct, total]).to(info.device)
        dist.all_reduce(both)
        correct, total = both[:-1].cpu(), both[-1:].cpu()
    model.train(was_training)
    n = float(total.item())
    if n == 0:
        raise VideoError(f"validation: none of the {count} clips could be read")
    out = {f"acc@{b if b is not None else grid.num_patches(model.patch_size)}": 100.0 * float(c) / n
           for b, c in zip(budgets, correct.tolist())}
    if broken.count:
        out["val_broken"] = broken.count  # this rank's count
    if any(nonfinite):
        out["val_nonfinite"] = sum(nonfinite)  # this rank's count of clip x budget outputs
        log.warning("validation: %d outputs were NaN or inf and count as wrong (at fp16 or bf16, try fp32)",
                    sum(nonfinite))
    return out
