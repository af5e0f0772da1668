"""Latency budgets: how long a request takes on this machine, and the largest budget that fits.

:func:`measure_latency` times the forward alone at each token budget (cached per device,
precision and model). :func:`measure_end_to_end` times what a user waits for: decoding the
grid's frames from a real video, preprocessing them (resize, crop, normalise) and the forward;
sampling 16 frames instead of 8 doubles the decoding, which at small budgets can cost more than
the transformer. ``optimize --cost latency --latency-ms X`` picks the grid and budget with the
best accuracy whose end-to-end time fits (:func:`choose_for_latency`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch

from fluxvit.atomic import write_text
from fluxvit.errors import ConfigError, VideoError
from fluxvit.flux.grid import Grid
from fluxvit.placement import Placement, cache_dir, device_key, dtype_name
from fluxvit.timing import synchronize, time_call

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
           f"{grid.shape}")
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


def budget_for_latency(model, grid: Grid, target_ms: float, placement: Placement = Placement(),
                       videos: Sequence[str | os.PathLike] = (), views=None) -> int:
    """The largest budget on :func:`budget_ladder` that fits ``target_ms`` here: the forward alone,
    or with sample ``videos`` the whole request (decoding ``grid``'s frames from the first that
    decodes, preprocessing, the forward over ``views``; :func:`measure_on_sample`)."""
    if not target_ms > 0:
        raise ConfigError(f"latency target must be positive, got {target_ms} ms")
    ladder = budget_ladder(grid.num_patches(model.patch_size))
    video = None
    if videos:
        video, costs = measure_on_sample(model, videos, [grid.with_budget(b) for b in ladder], views, placement,
                                         repeats=2)
        times = {b: costs[grid.with_budget(b)].total_ms for b in ladder}
    else:
        times = measure_latency(model, grid, ladder, placement)
    fitting = [b for b in ladder if times[b] <= target_ms]
    if not fitting:
        what = f"end to end ({video})" if video is not None else "(forward)"
        raise ConfigError(
            f"no token budget fits {target_ms} ms {what} on {device_key(placement.device)} "
            f"({dtype_name(placement.dtype)}): the smallest ({ladder[0]} tokens) takes {times[ladder[0]]:.1f} ms"
        )
    return max(fitting)


@dataclass(frozen=True)
class EndToEnd:
    """Median milliseconds of one request at a grid and budget: decode, preprocess, forward."""

    decode_ms: float
    preprocess_ms: float
    forward_ms: float

    @property
    def total_ms(self) -> float:
        return self.decode_ms + self.preprocess_ms + self.forward_ms

    def to_dict(self) -> dict:
        return {**{k: round(v, 2) for k, v in asdict(self).items()}, "total_ms": round(self.total_ms, 2)}


def measure_end_to_end(
    model, video: str | os.PathLike, grids: list[Grid], views=None, placement: Placement = Placement(),
    repeats: int = 3, reader=None, statistic: str = "median",
) -> dict[Grid, EndToEnd]:
    """Per grid (with its budget): the median ms (``statistic="min"``: the fastest repeat, what
    the work costs here without the other work the machine shares) to decode its test views'
    frames from ``video`` (each repeat decodes afresh), to preprocess them and to run the model, one video (all its
    views) on ``placement``. Grids that differ only in their budget are decoded and
    preprocessed once: only their forwards differ. Decoding depends on the video (size, codec, key frames): give one
    like those the deployment will see."""
    from fluxvit.data.preprocessing import preprocessing_of
    from fluxvit.data.video import PyAVReader
    from fluxvit.evaluate.runner import Views

    views = views or Views()
    reader = reader if reader is not None else PyAVReader()
    pre = preprocessing_of(model)
    sampler, transform = pre.sampler(), pre.transform(views.crops)
    device = placement.device
    model.to(device).eval()
    n = reader.num_frames(video)
    shapes: dict[tuple[int, int, int], list[Grid]] = {}  # grids that differ only in budget share their input
    for grid in grids:
        shapes.setdefault((grid.frames, grid.height, grid.width), []).append(grid)

    if statistic not in ("median", "min"):
        raise ConfigError(f"statistic must be median or min, got {statistic!r}")
    reduce = statistics.median if statistic == "median" else min

    def timed_ms(call) -> tuple[float, object]:  # a first, untimed call warms the caches
        result, times = call(), []
        for _ in range(repeats):
            start = time.perf_counter()
            result = call()
            times.append(1e3 * (time.perf_counter() - start))
        return reduce(times), result

    out = {}
    with torch.no_grad():
        for (frames, height, _), same_input in shapes.items():
            idx = sampler.views(n, frames, views.clips).flatten().tolist()
            decode_ms, decoded = timed_ms(lambda idx=idx: reader.read(video, idx))
            decoded = decoded.view(views.clips, frames, *decoded.shape[1:])
            preprocess_ms, clip = timed_ms(
                lambda d=decoded, h=height: torch.cat([transform(c, h) for c in d]).to(device))
            for grid in same_input:
                def forward(grid=grid, clip=clip):
                    with placement.autocast():
                        model(clip, num_tokens=grid.budget)
                    synchronize(device)

                out[grid] = EndToEnd(decode_ms, preprocess_ms, timed_ms(forward)[0])
                log.debug("%s end to end: %s", grid, out[grid])
    return {grid: out[grid] for grid in grids}


def measure_on_sample(model, videos: Sequence[str | os.PathLike], grids: list[Grid], views=None,
                      placement: Placement = Placement(), repeats: int = 3, tries: int = 8):
    """``(video, measure_end_to_end(...))`` on the first of ``videos[:tries]`` that decodes (it
    stands for the deployment's videos); :class:`VideoError` when none does."""
    for video in list(videos)[:tries]:
        try:
            return video, measure_end_to_end(model, video, grids, views, placement, repeats)
        except VideoError as e:
            log.warning("latency: %s; trying the next video", e)
    raise VideoError(f"none of the first {min(len(videos), tries)} sample videos decodes; cannot measure "
                     "end-to-end latency")


def choose_for_latency(accuracy: Mapping[Hashable, float], cost_ms: Mapping[Hashable, float],
                       target_ms: float) -> Hashable:
    """The candidate with the best accuracy among those whose cost fits ``target_ms`` (the cheaper
    one on a tie); :class:`ConfigError` naming the cheapest when none fits."""
    if not target_ms > 0:
        raise ConfigError(f"latency target must be positive, got {target_ms} ms")
    fitting = [c for c in accuracy if c in cost_ms and cost_ms[c] <= target_ms]
    if not fitting:
        cheapest = min(cost_ms, key=cost_ms.get)
        raise ConfigError(f"nothing fits {target_ms:g} ms end to end here: the cheapest candidate ({cheapest}) "
                          f"takes {cost_ms[cheapest]:.1f} ms")
    return max(fitting, key=lambda c: (accuracy[c], -cost_ms[c]))
