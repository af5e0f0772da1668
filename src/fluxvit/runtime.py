"""Process-level tuning for CPU inference and training.

PyTorch's CPU tensors come from the C allocator. With glibc's defaults, every large
activation (tens of MB for a ViT-S at 2048 tokens) is mapped fresh from the kernel and
returned on free, so each forward pays page faults for memory it just released: ~25% of a
FluxViT-S forward on 2 cores. :func:`tune_cpu_allocator` keeps freed memory in the process
instead (at the cost of a resident size that stays at its peak). The command line calls it;
library users opt in.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_tuned = False


def tune_cpu_allocator(mmap_threshold: int = 32 * 2**20, trim_threshold: int = 2**30) -> bool:
    """Raise glibc's mmap and trim thresholds (no-op, returning False, off glibc/Linux)."""
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # musl or another libc: nothing to tune
    ok = mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    _tuned = ok
    log.debug("allocator tuning %s", "applied" if ok else "refused")
    return ok
