"""Flux: flexible sampling grids, token budgets, token selectors and the FLOPs model.

``grid`` needs no torch; the selectors are imported on first use."""

from __future__ import annotations

import importlib

from fluxvit.flux.grid import FluxGrid, Grid

_LAZY = {"SELECTORS": "fluxvit.flux.selectors", "get_selector": "fluxvit.flux.selectors",
         "group_dynamic_select": "fluxvit.flux.selectors"}

__all__ = ["Grid", "FluxGrid", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'fluxvit.flux' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
