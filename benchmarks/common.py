"""Shared helpers for the benchmarks: JSON output (timing lives in fluxvit.evaluate.speed)."""

from __future__ import annotations

import json
from pathlib import Path

from fluxvit.atomic import write_text
from fluxvit.evaluate.speed import machine
from fluxvit.timing import matmul_gflops, time_call

RESULTS = Path(__file__).resolve().parent / "results"

__all__ = ["RESULTS", "machine", "matmul_gflops", "time_call", "write_result"]


def write_result(name: str, payload: dict) -> Path:
    return write_text(RESULTS / f"{name}.json", json.dumps({"benchmark": name, "machine": machine(), **payload},
                                                          indent=2))
