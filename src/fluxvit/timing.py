"""Timing that is right on every device: the one place a forward is timed.

CUDA runs asynchronously, so a wall clock read after a launch measures the launch, not the
work: every timed region here synchronises the device before it starts and before it stops.
:func:`time_call` adds the warm-up (first calls pay for allocator growth, kernel selection and
autotuning) and reports the median of repeated calls. :class:`Stopwatch` times the real work of
a loop (evaluation's ms per view) the same way, without repeating it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for the work queued on ``device`` (a no-op off CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Adds up the seconds spent inside ``with watch:`` blocks, synchronising ``device``."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.seconds += time.perf_counter() - self._start


def time_call(fn: Callable[[], object], repeats: int = 3, warmup: int = 1, device: torch.device | str = "cpu") -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        watch = Stopwatch(device)
        with watch:
            fn()
        times.append(watch.seconds)
    return sorted(times)[len(times) // 2]


def matmul_gflops(dtype: torch.dtype = torch.float32, n: int = 2048, device: torch.device | str = "cpu") -> float:
    """Achieved GFLOP/s (2 n^3 per product) of a square matmul in ``dtype``: the practical peak
    of this device's matrix math at the default size."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return 2 * n**3 / time_call(lambda: a @ b, repeats=5, warmup=2, device=device) / 1e9
