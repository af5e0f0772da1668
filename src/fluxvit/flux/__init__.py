"""Flux: flexible sampling grids, token budgets, token selectors and the FLOPs model."""

from fluxvit.flux.grid import FluxGrid, Grid
from fluxvit.flux.selectors import SELECTORS, get_selector, group_dynamic_select

__all__ = ["Grid", "FluxGrid", "SELECTORS", "get_selector", "group_dynamic_select"]
