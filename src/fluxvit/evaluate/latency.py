"""Latency budgets: measure how long a forward takes on this device at each token budget and
pick the largest budget that fits a target latency. Measurements are cached per device."""

from __future__ import annotations

import hashlib
import json
import logging

import torch

from fluxvit.atomic import write_text
from fluxvit.errors import ConfigError
from fluxvit.flux.grid import Grid
from fluxvit.placement import Placement, cache_dir, device_key, dtype_name
from fluxvit.timing import time_call

log = logging.getLogger(__name__)


def _model_key(model) -> str:
    cfg = json.dumps(model.config.to_dict(), sort_keys=True)
    key = hashlib.sha1(cfg.encode()).hexdigest()[:12]
    # an int8 or compiled model (fluxvit.acceleration) runs at its own speed
    accelerated = getattr(model, "acceleration", None)
    return f"{key}+{accelerated}" if accelerated else key


def budget_ladder(max_tokens: int, smallest: int = 32) -> list[int]:
    """Budgets to measure: powers of two and their 1.5x between ``smallest`` and ``max_tokens``."""
    out, b = [], smallest
    while b <= max_tokens:
        out += [b] + ([b * 3 // 2] if b * 3 // 2 <= max_tokens else [])
        b *= 2
    return sorted(set(out + [max_tokens]))


def measure_latency(
    model, grid: Grid, budgets: list[int], placement: Placement = Placement(), repeats: int = 3,
    use_cache: bool = True,
) -> dict[int, float]:
    """Median forward ms (batch 1) at each budget, selecting from ``grid``, on ``placement``
    (the model is moved there); cached per device and precision."""
    device = placement.device
    path = cache_dir() / "latency.json"
    key = (f"{device_key(device)}|{dtype_name(placement.dtype)}|{_model_key(model)}|"
           f"{grid.frames}x{grid.height}x{grid.width}")
    cache = {}
    if use_cache and path.is_file():
        try:
            cache = json.loads(path.read_text())
        except ValueError:
            cache = {}
    known = {int(k): v for k, v in cache.get(key, {}).items()}
    todo = [b for b in budgets if b not in known]
    if todo:
        video = torch.randn(1, 3, grid.frames, grid.height, grid.width, device=device)
        model.to(device).eval()
        with torch.no_grad(), placement.autocast():
            for b in todo:
                known[b] = 1e3 * time_call(lambda b=b: model(video, num_tokens=b), repeats, 1, device)
                log.debug("budget %d: %.1f ms", b, known[b])
        if use_cache:
            cache[key] = {str(k): v for k, v in sorted(known.items())}
            write_text(path, json.dumps(cache, indent=1))
    return {b: known[b] for b in budgets}


def budget_for_latency(model, grid: Grid, target_ms: float, placement: Placement = Placement()) -> int:
    """The largest budget on :func:`budget_ladder` whose forward fits ``target_ms`` here."""
    if target_ms <= 0:
        raise ConfigError(f"latency target must be positive, got {target_ms} ms")
    ladder = budget_ladder(grid.num_patches(model.patch_size))
    times = measure_latency(model, grid, ladder, placement)
    fitting = [b for b in ladder if times[b] <= target_ms]
    if not fitting:
        raise ConfigError(
            f"no token budget fits {target_ms} ms on {device_key(placement.device)} ({dtype_name(placement.dtype)}): "
            f"the smallest ({ladder[0]} tokens) takes {times[ladder[0]]:.1f} ms"
        )
    return max(fitting)
