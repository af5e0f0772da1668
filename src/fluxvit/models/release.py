"""The official release's checkpoints (OpenGVLab/FluxViT, ``single_modality/models/fluxvit.py``):
the one place that knows its key names and tensor layouts.

:func:`convert_official_state_dict` turns a release state dict into this project's names for a
given :class:`~fluxvit.models.fluxvit.FluxViTConfig`: renames, reshapes the patch projection and
the depth-wise convolutions, reorders the pixel norm, splits the positional table off its class
entry (resized to the config's grid when the release's differs) and records each head's budget.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from fluxvit.errors import CheckpointError
from fluxvit.models.pos_embed import interpolate_table
from fluxvit.models.state_dict import count_modules

if TYPE_CHECKING:  # annotations only: checkpoint I/O does not import the architecture
    from fluxvit.models.fluxvit import FluxViTConfig

log = logging.getLogger(__name__)

# The release's training engine sends the largest budget to head 0 (a comment in its eval
# script says the reverse; the engine is what trained the weights).
RELEASE_HEAD_BUDGETS = (3072, 2048, 1024)
_CLASSIFIER = "head.0.weight"
# release name fragment -> ours, applied in order
_RENAMES = (
    ("gpe_proj.depthwise_conv.", "pos_embed.proj."),
    ("patch_embed.norm_before.", "patch_embed.norm_pixels."),
    (".attn.lpe.depthwise_conv.", ".attn.lpe."),
    ("clip_projector.", "projectors."),
    (".norm1_q.", ".norm_q."),
    (".norm1_k.", ".norm_k."),
    (".norm1_v.", ".norm_v."),
    (".cross_attn.q_bias", ".q.bias"),
    (".cross_attn.k_bias", ".k.bias"),
    (".cross_attn.v_bias", ".v.bias"),
    (".cross_attn.", "."),
    ("final_clip_decoder_for_projs.", "align_projs."),
)
# positional grids (T, h, w) of the release's tables, tried when the config's does not fit
_RELEASE_POS_GRIDS = ((24, 18, 18), (32, 20, 20), (16, 16, 16), (8, 16, 16))


def is_official_state_dict(state: dict[str, torch.Tensor]) -> bool:
    """Recognise a release checkpoint by its key names."""
    return any(k.startswith(("clip_projector.", "gpe_proj.", "patch_embed.norm_before")) for k in state)


def release_num_classes(state: dict[str, torch.Tensor]) -> int | None:
    """The class count of a release state dict's first classifier (None if it has none)."""
    weight = state.get(_CLASSIFIER)
    return int(weight.shape[0]) if weight is not None and weight.dim() == 2 else None


def _our_name(key: str) -> str:
    """Map one release key to ours (names only)."""
    for old, new in _RENAMES:
        key = key.replace(old, new)
    if key.startswith("head."):
        key = "heads." + key[len("head."):]
    if key.startswith("align_projs.") and ".head." in key:
        key = key.replace(".head.", ".fc.")
    return key


def convert_official_state_dict(state: dict[str, torch.Tensor], config: FluxViTConfig) -> dict[str, torch.Tensor]:
    """Release state dict -> ours for ``config`` (see the module docstring)."""
    out: dict[str, torch.Tensor] = {}
    p = config.patch_size
    for key, value in state.items():
        if key == "pos_embed":
            out["pos_embed.cls"] = value[:, :1].clone()
            out["pos_embed.table"] = _official_table(value[:, 1:], config)
            continue
        new = _our_name(key)
        if new == "patch_embed.proj.weight" and value.dim() == 5:
            value = value.reshape(value.shape[0], -1)  # conv (C, 3, 1, p, p) -> linear (C, 3pp)
        elif new == "patch_embed.norm_pixels.weight" and value.numel() == 3 * p * p:
            value = value.view(p, p, 3).permute(2, 0, 1).reshape(-1)  # (row, col, ch) -> (ch, row, col)
        elif new.endswith(".attn.lpe.weight") and value.dim() == 5:
            value = value.reshape(value.shape[0], 1, -1)
        out[new] = value
    if "head_budgets" not in out:
        heads = count_modules(out, "heads.") or len(RELEASE_HEAD_BUDGETS)
        out["head_budgets"] = torch.tensor(RELEASE_HEAD_BUDGETS[:heads], dtype=torch.long)
    return out


def _official_table(tokens: torch.Tensor, config: FluxViTConfig) -> torch.Tensor:
    """(1, t*h*w, C) release table -> (1, C, T, H, W) on ``config.pos_grid`` (resized if needed)."""
    m, c = tokens.shape[1], tokens.shape[2]
    for t, h, w in (tuple(config.pos_grid), *_RELEASE_POS_GRIDS):
        if t * h * w == m:
            break
    else:
        raise CheckpointError(f"cannot infer the positional grid of a table with {m} entries")
    table = tokens.reshape(1, t, h, w, c).permute(0, 4, 1, 2, 3)
    if (t, h, w) != tuple(config.pos_grid):
        log.info("resizing positional table %s -> %s", (t, h, w), tuple(config.pos_grid))
        table = interpolate_table(table, tuple(config.pos_grid))
    return table.contiguous()
