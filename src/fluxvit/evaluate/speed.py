"""Model speed on this machine: forward latency at token budgets, achieved GFLOP/s against the
machine's matmul peak, and the token selector's share of a forward.

Used by ``fluxvit bench`` and by ``benchmarks/bench_model.py``. Timings are medians of repeated
calls after a warm-up, through :func:`fluxvit.timing.time_call` (CUDA synchronised).
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass

import torch

from fluxvit import limits
from fluxvit.errors import ConfigError
from fluxvit.flux.grid import Grid
from fluxvit.flux.selectors import group_dynamic_select
from fluxvit.timing import time_call
from fluxvit.typecheck import show

MAX_REPEATS = 1000  # timed calls per case: a median of more says nothing new, and takes hours


def machine(device: torch.device | str = "cpu") -> dict:
    """What the numbers were measured on."""
    device = torch.device(device)
    return {
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


@dataclass
class ForwardSpeed:
    """One measurement: ``batch`` clips of ``grid`` cut to ``tokens``, in ``dtype``."""

    model: str
    tokens: int
    grid: str
    batch: int
    dtype: str
    ms: float  # median wall time of one batched forward
    gflop_per_s: float  # achieved, counting 2 FLOPs per multiply-add of the whole forward
    fraction_of_peak: float | None  # of the matmul peak in the same dtype (None: not measured)

    def to_dict(self) -> dict:
        return asdict(self)


def check_case(grid: Grid, tokens: int, batch: int = 1, repeats: int = 3, patch_size: int = 14) -> None:
    """One measurement's values, checked before anything is allocated: ``tokens`` (a positive
    integer, at most the grid's patches), the grid within :data:`~fluxvit.limits.GRID_TOKENS`,
    ``batch`` within :data:`~fluxvit.limits.BATCH_SIZE`, 1 to :data:`MAX_REPEATS` ``repeats``."""
    for key, value in (("tokens", tokens), ("batch", batch), ("repeats", repeats)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {show(value)}")
    grid.check_size(patch_size)
    grid.with_budget(tokens).num_tokens(patch_size)  # no more tokens than the grid's patches
    limits.BATCH_SIZE.check(batch, "batch")
    if repeats > MAX_REPEATS:
        raise ConfigError(f"repeats {repeats}: at most {MAX_REPEATS} timed calls per case")


def forward_speed(
    model,
    grid: Grid,
    tokens: int,
    batch: int = 1,
    dtype: torch.dtype | None = None,
    repeats: int = 3,
    peak_gflops: float | None = None,
) -> ForwardSpeed:
    """Time ``model(video, num_tokens=tokens)`` on random video of ``grid`` (inference mode);
    ``dtype`` runs under autocast (None: the model's own precision); the values are checked
    first (:func:`check_case`)."""
    check_case(grid, tokens, batch, repeats, model.patch_size)
    device = next(model.parameters()).device
    video = torch.randn(batch, 3, grid.frames, grid.height, grid.width, device=device)
    budget = tokens if tokens < grid.num_patches(model.patch_size) else None

    autocast = torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    def run() -> None:
        with torch.inference_mode(), autocast:
            model(video, num_tokens=budget)

    model.eval()
    seconds = time_call(run, repeats=repeats, warmup=1, device=device)
    gflops = 2 * model.estimate_flops(grid.with_budget(budget)).total * batch / seconds / 1e9
    return ForwardSpeed(
        model=getattr(model, "name", None) or type(model).__name__, tokens=tokens, grid=str(grid), batch=batch,
        dtype=str(dtype or next(model.parameters()).dtype).replace("torch.", ""), ms=seconds * 1e3,
        gflop_per_s=gflops, fraction_of_peak=gflops / peak_gflops if peak_gflops else None,
    )


def selector_seconds(model, grid: Grid, tokens: int, batch: int = 1, repeats: int = 3) -> float:
    """Median seconds of the group-dynamic selection alone, on the model's patch embeddings."""
    check_case(grid, tokens, batch, repeats, model.patch_size)
    device = next(model.parameters()).device
    video = torch.randn(batch, 3, grid.frames, grid.height, grid.width, device=device)
    with torch.inference_mode():
        emb = model.patch_embed(video)
        return time_call(lambda: group_dynamic_select(emb, tokens), repeats=repeats, warmup=1, device=device)
