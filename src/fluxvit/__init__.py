"""fluxvit: deployment-efficient video transformers (FluxViT, Flux training, Token Optimization).

The public API is imported on first use (PEP 562), so ``import fluxvit`` and ``fluxvit --help``
do not pay for importing torch until a model, a grid or a checkpoint is asked for.
"""

from __future__ import annotations

import importlib

from fluxvit.errors import CheckpointError, ConfigError, FluxViTError, OutputError, VideoError

__version__ = "0.1.0"

_LAZY = {
    "FluxViT": "fluxvit.models.fluxvit",
    "FluxViTConfig": "fluxvit.models.fluxvit",
    "model_config": "fluxvit.models.registry",
    "create_model": "fluxvit.models.registry",
    "list_models": "fluxvit.models.registry",
    "load_checkpoint": "fluxvit.models.registry",
    "from_pretrained": "fluxvit.models.registry",
    "save_checkpoint": "fluxvit.models.checkpoint",
    "Grid": "fluxvit.flux.grid",
    "FluxGrid": "fluxvit.flux.grid",
    "Placement": "fluxvit.placement",
    "tune_cpu_allocator": "fluxvit.runtime",
}

__all__ = [*_LAZY, "FluxViTError", "ConfigError", "CheckpointError", "VideoError", "OutputError"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'fluxvit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
