"""FluxViT models: the architecture, its layers, the registry and checkpoint I/O."""

from fluxvit.models.checkpoint import read_checkpoint, save_checkpoint
from fluxvit.models.fluxvit import FluxViT, FluxViTConfig
from fluxvit.models.registry import (
    create_model,
    from_pretrained,
    list_models,
    load_checkpoint,
    model_config,
    register_model,
)

__all__ = [
    "FluxViT",
    "FluxViTConfig",
    "create_model",
    "list_models",
    "model_config",
    "register_model",
    "load_checkpoint",
    "from_pretrained",
    "read_checkpoint",
    "save_checkpoint",
]
