"""AdamW with layer-wise learning-rate decay and no-weight-decay groups; cosine schedule.

Layer ids follow the release's ``get_num_layer_for_vit``: the embeddings (patch embedding,
positional table, class token) are layer 0, block i is layer i + 1, everything else (the
positional table's projection, projectors, norms, heads, alignment and distillation
projections) is layer depth + 1.
A parameter in layer l gets ``lr * layer_decay ** (depth + 1 - l)``. 1-D parameters (norm
weights, biases, LayerScale) and the model's ``no_weight_decay()`` names get no weight decay.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fluxvit.typecheck import in_range


def layer_id(name: str, depth: int) -> int:
    """Layer of parameter ``name`` (as named inside the model) for a model of ``depth`` blocks.

    The positional table and its class entry are the release's ``pos_embed`` (layer 0); the
    table's depth-wise projection, ``pos_embed.proj``, is the release's ``gpe_proj``, which matches
    none of its rules and so trains in the top layer, at the full learning rate."""
    if name.startswith(("cls_token", "patch_embed")) or name in ("pos_embed.table", "pos_embed.cls"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def param_groups(
    modules: dict[str, nn.Module],
    depth: int,
    weight_decay: float,
    layer_decay: float = 1.0,
    no_decay: set[str] | frozenset[str] = frozenset(),
) -> list[dict]:
    """Optimiser groups over ``modules`` ({prefix: module}; the prefix "model" is the student,
    whose parameter names get layer ids; others count as top layers). Each group carries
    ``lr_scale``, applied by :func:`apply_lr`, its ``layer`` and its parameters' ``names``.
    Frozen parameters are left out."""
    in_range(weight_decay, "weight_decay", 0, what="optimiser")
    in_range(layer_decay, "layer_decay", hi=1, above=0, what="optimiser")
    groups: dict[tuple[int, bool], dict] = {}
    for prefix, module in modules.items():
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            lid = layer_id(name, depth) if prefix == "model" else depth + 1
            decay = param.dim() > 1 and not name.endswith(".bias") and name not in no_decay
            key = (lid, decay)
            if key not in groups:
                groups[key] = {
                    "params": [],
                    "names": [],
                    "weight_decay": weight_decay if decay else 0.0,
                    "lr_scale": layer_decay ** (depth + 1 - lid),
                    "layer": lid,
                }
            groups[key]["params"].append(param)
            groups[key]["names"].append(f"{prefix}.{name}")
    return [groups[k] for k in sorted(groups)]


def build_optimizer(
    groups: list[dict], lr: float, betas: tuple[float, float], eps: float, fused: bool | None = None
) -> torch.optim.AdamW:
    """AdamW over ``groups`` (from :func:`param_groups`); per-group lr set each step."""
    clean = [{k: v for k, v in g.items() if k not in ("names", "layer")} for g in groups]
    return torch.optim.AdamW(clean, lr=lr, betas=betas, eps=eps, fused=fused)


def cosine_lr(step: int, total: int, peak: float, minimum: float, warmup: int, warmup_start: float) -> float:
    """Learning rate at optimiser ``step`` (0-based) of ``total``: linear warm-up from
    ``warmup_start`` to ``peak`` over ``warmup`` steps, then cosine from ``peak`` to ``minimum``."""
    if step < warmup:
        return warmup_start + (peak - warmup_start) * step / warmup
    span = max(total - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return minimum + 0.5 * (peak - minimum) * (1.0 + math.cos(math.pi * progress))


def apply_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr to ``lr`` times its ``lr_scale``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
