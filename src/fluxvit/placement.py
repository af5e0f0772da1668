"""Where and in which precision a model runs: ``--device auto|cpu|cuda[:N]`` and
``--dtype auto|fp32|bf16|fp16``, as one small value, :class:`Placement`.

``auto`` precision must never be slower than fp32. On CUDA it is bf16 from compute capability 8.0
(Ampere) on, where bf16 matrix math runs on tensor cores, and fp32 before. On a CPU a flag is not
enough: a CPU with AMX runs bf16 matmuls ~6x faster than fp32, but one with only AVX512-BF16 runs
them at about half the fp32 speed (measured on two 2-core machines of this project: 2300 vs 400
GFLOP/s, 170 vs 310), and one with neither emulates it at ~1 GFLOP/s. So ``auto`` measures both
once per machine (a 256^3 matmul, well under a second) and picks bf16 only when it is at least
:data:`BF16_MIN_SPEEDUP` x faster; the measurement is cached beside the latency cache
(``$FLUXVIT_CACHE``, default ``~/.cache/fluxvit``).

Reduced precision runs under ``torch.autocast`` (weights stay fp32; matmuls and attention run in
bf16/fp16); outputs are cast back to fp32 by the callers that score them.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from fluxvit.errors import ConfigError

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)
BF16_MIN_SPEEDUP = 1.25  # auto takes CPU bf16 only when its matmuls are this much faster than fp32
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda)(?::(\d{1,3}))?$")


def cache_dir() -> Path:
    """Where per-machine measurements are cached: ``$FLUXVIT_CACHE``, else ``~/.cache/fluxvit``."""
    root = os.environ.get("FLUXVIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fluxvit"
    )
    return Path(root)


def device_key(device: torch.device) -> str:
    """A name for the hardware a measurement belongs to (and the thread count it used)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()}-{os.cpu_count()}cpu-{torch.get_num_threads()}thr"
    return f"{device.type}:{name}"


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> this rank's GPU when CUDA is available, else the CPU; ``cuda`` -> this rank's
    GPU; ``cuda:N`` as given. A device that is not here is one :class:`ConfigError` line."""
    m = _DEVICE_RE.match(str(name).strip().lower())
    if not m or (m.group(1) != "cuda" and m.group(2) is not None):
        raise ConfigError(f"device {name!r} is not one of auto, cpu, cuda, cuda:N")
    kind, index = m.group(1), m.group(2)
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: no CUDA device is available here")
    index = int(index) if index is not None else local_rank
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


def measured_matmul_speeds(device: torch.device) -> dict:
    """{"fp32": GFLOP/s, "bf16": GFLOP/s} of a 256^3 matmul on ``device``, measured once per
    machine and cached (what ``auto`` decides by; benchmarks use it to skip emulated bf16)."""
    from fluxvit.atomic import write_text
    from fluxvit.timing import matmul_gflops

    path = cache_dir() / "precision.json"
    key = device_key(device)
    try:
        cache = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        cache = {}  # a damaged cache is measured again
    entry = cache.get(key) if isinstance(cache, dict) else None
    if isinstance(entry, dict) and all(isinstance(entry.get(k), (int, float)) for k in ("fp32", "bf16")):
        return entry
    # 256^3: small enough that a CPU without native bf16 (emulated: ~1 GFLOP/s measured here)
    # answers in a fraction of a second, large enough to show AMX's several-fold lead. The best of
    # three, alternating the dtypes: other work on the machine slows a measurement, never speeds it.
    best = {"fp32": 0.0, "bf16": 0.0}
    for _ in range(3):
        for name in best:
            best[name] = max(best[name], matmul_gflops(DTYPES[name], 256, device))
    entry = {name: round(speed, 1) for name, speed in best.items()}
    log.info("measured matmul speed on %s: fp32 %.0f, bf16 %.0f GFLOP/s", key, entry["fp32"], entry["bf16"])
    cache = cache if isinstance(cache, dict) else {}
    cache[key] = entry
    try:
        write_text(path, json.dumps(cache, indent=1))
    except OSError as e:  # a read-only home: measure again next time
        log.debug("precision cache not written (%s)", e)
    return entry


def bf16_is_emulated(device: torch.device) -> bool:
    """True where bf16 matmuls run below a quarter of fp32 speed (no bf16 hardware: a bf16
    forward of FluxViT-S would take minutes; benchmarks skip it there)."""
    if device.type == "cuda":
        return False
    speeds = measured_matmul_speeds(device)
    return speeds["bf16"] < 0.25 * speeds["fp32"]


def auto_dtype(device: torch.device) -> torch.dtype:
    """The fastest precision that keeps accuracy on ``device`` (module docstring)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float32
    speeds = measured_matmul_speeds(device)
    return torch.bfloat16 if speeds["bf16"] >= BF16_MIN_SPEEDUP * speeds["fp32"] else torch.float32


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``fp32``/``bf16``/``fp16`` as named, ``auto`` as :func:`auto_dtype` decides."""
    key = str(name).strip().lower()
    if key == "auto":
        return auto_dtype(device)
    if key not in DTYPES:
        raise ConfigError(f"dtype {name!r} is not one of {', '.join(DTYPE_CHOICES)}")
    if key == "fp16" and device.type == "cpu":
        raise ConfigError("dtype 'fp16' needs a CUDA device (CPUs have no fast fp16 matrix math; use bf16 or fp32)")
    return DTYPES[key]


@dataclass(frozen=True)
class Placement:
    """A device and the precision the model computes in there."""

    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    @classmethod
    def resolve(cls, device: str = "auto", dtype: str = "auto") -> Placement:
        """From the command line's words (see the module docstring)."""
        dev = resolve_device(device)
        return cls(dev, resolve_dtype(dtype, dev))

    def autocast(self):
        """The context a forward runs in: autocast to ``dtype`` unless it is fp32."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def to_dict(self) -> dict:
        return {"device": str(self.device), "dtype": dtype_name(self.dtype)}

    def __str__(self) -> str:
        return f"{self.device} {dtype_name(self.dtype)}"
