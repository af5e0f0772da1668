"""What ``fluxvit serve`` is told, each value checked against its range (importing no torch, so
that ``fluxvit --help`` stays light)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from fluxvit.errors import ConfigError
from fluxvit.serve.scheduler import MODES
from fluxvit.typecheck import show


@dataclass(frozen=True)
class ServeSettings:
    """What ``fluxvit serve`` is told; every value checked against its range when made."""

    latency_ms: float = 250.0
    budget_mode: str = "adaptive"
    max_budget: int | None = None
    views: str = "1x1"
    selector: str = "group_dynamic"
    max_batch: int = 8
    batch_wait_ms: float = 5.0
    decode_workers: int = 1
    max_concurrent: int = 32
    max_upload_mb: float = 64.0
    decode_timeout_s: float = 10.0
    max_topk: int = 100
    media_root: str | None = None
    sample_video: str | None = None

    # (lowest, highest) of each number; None: no bound on that side
    RANGES = {"latency_ms": (1, 3.6e6), "max_budget": (1, None), "max_batch": (1, 256),
              "batch_wait_ms": (0, 1000), "decode_workers": (1, 64), "max_concurrent": (1, 10_000),
              "max_upload_mb": (0.001, 16_384), "decode_timeout_s": (0.01, 3600), "max_topk": (1, 100_000)}

    def __post_init__(self) -> None:
        integers = {"max_budget", "max_batch", "decode_workers", "max_concurrent", "max_topk"}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in self.RANGES or value is None:
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    f.name in integers and not isinstance(value, int)):
                raise ConfigError(f"{flag} must be {'an integer' if f.name in integers else 'a number'}, "
                                  f"got {show(value)}")
            lo, hi = self.RANGES[f.name]
            if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ConfigError(f"{flag} must be between {lo:g} and {hi:g}, got {show(value)}" if hi is not None
                                  else f"{flag} must be at least {lo:g}, got {show(value)}")
        if self.budget_mode not in MODES:
            raise ConfigError(f"--budget must be {' or '.join(MODES)}, got {show(self.budget_mode)}")
        from fluxvit.evaluate.runner import Views  # (torch: not needed by --help)

        Views.parse(self.views)
