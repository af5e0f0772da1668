"""Model registry: one constructor per architecture name, all through :func:`create_model`."""

from __future__ import annotations

import os
from collections.abc import Callable

from fluxvit.errors import ConfigError
from fluxvit.models.fluxvit import FluxViT, FluxViTConfig

_REGISTRY: dict[str, Callable[[], FluxViTConfig]] = {}


def register_model(fn: Callable[[], FluxViTConfig]) -> Callable[[], FluxViTConfig]:
    """Register ``fn`` (returning the architecture's :class:`FluxViTConfig`) under its name."""
    _REGISTRY[fn.__name__] = fn
    return fn


@register_model
def fluxvit_small_patch14() -> FluxViTConfig:
    """FluxViT-S/14, the release's shapes: 384 wide, 6 heads, positional table 24x18x18."""
    return FluxViTConfig(embed_dim=384, depth=12, num_heads=6, pos_grid=(24, 18, 18))


@register_model
def fluxvit_base_patch14() -> FluxViTConfig:
    """FluxViT-B/14, the release's shapes: 768 wide, 12 heads, positional table 32x20x20."""
    return FluxViTConfig(embed_dim=768, depth=12, num_heads=12, pos_grid=(32, 20, 20))


@register_model
def fluxvit_tiny_patch14() -> FluxViTConfig:
    """FluxViT-Ti/14 for CPU work: 192 wide, 3 heads, depth 12, budgets 1024/512/256."""
    return FluxViTConfig(
        embed_dim=192, depth=12, num_heads=3, pos_grid=(16, 12, 12), clip_embed_dim=384,
        pool_heads=8, head_budgets=(1024, 512, 256), default_grid=(8, 168), init_values=0.1,
    )


@register_model
def fluxvit_nano_patch14() -> FluxViTConfig:
    """FluxViT-N/14 for CPU training and the demo: 96 wide, 3 heads, depth 6, budgets 256/128/64."""
    return FluxViTConfig(
        embed_dim=96, depth=6, num_heads=3, pos_grid=(16, 8, 8), clip_embed_dim=192,
        pool_heads=4, head_budgets=(256, 128, 64), default_grid=(8, 112), init_values=0.1,
    )


def list_models() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_REGISTRY)


def model_config(name: str, **overrides) -> FluxViTConfig:
    """The config of architecture ``name`` with ``overrides`` applied (checked)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    cfg = _REGISTRY[name]()
    return FluxViTConfig.from_dict({**cfg.to_dict(), **overrides}) if overrides else cfg


def create_model(
    name: str,
    num_classes: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    reset_heads: bool = False,
    **overrides,
) -> FluxViT:
    """Build a registered FluxViT, optionally loading ``checkpoint``.

    ``checkpoint``: an official release file (.pth/.bin; raw state dict or under
    ``model``/``module``) or this project's checkpoint (.safetensors file or directory).
    ``num_classes`` defaults to the checkpoint's (or 400 without one). With ``reset_heads``
    the classifiers are re-initialised when the class count differs (fine-tuning); otherwise a
    mismatch is an error. Nothing is ever unpickled beyond tensors.
    """
    if checkpoint is None:
        if num_classes is not None:
            overrides["num_classes"] = num_classes
        model = FluxViT(model_config(name, **overrides))
        model.name = name
        return model
    from fluxvit.models.checkpoint import load_into

    return load_into(name, checkpoint, num_classes=num_classes, reset_heads=reset_heads, **overrides)
