"""fluxvit: deployment-efficient video transformers (FluxViT, Flux training, Token Optimization)."""

from fluxvit.errors import CheckpointError, ConfigError, FluxViTError, VideoError
from fluxvit.flux.grid import FluxGrid, Grid
from fluxvit.models import (
    FluxViT,
    FluxViTConfig,
    create_model,
    list_models,
    load_checkpoint,
    model_config,
    save_checkpoint,
)
from fluxvit.runtime import tune_cpu_allocator

__version__ = "0.1.0"

__all__ = [
    "FluxViT",
    "FluxViTConfig",
    "model_config",
    "create_model",
    "list_models",
    "load_checkpoint",
    "save_checkpoint",
    "Grid",
    "FluxGrid",
    "FluxViTError",
    "ConfigError",
    "CheckpointError",
    "VideoError",
    "tune_cpu_allocator",
]
