"""Patch embedding with Dual Patch Norm, and the global positional embedding (GLPE, global part)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fluxvit.models.layers import RMSNorm


class DualNormPatchEmbed(nn.Module):
    """Patches of ``patch_size`` pixels (tubelet 1) -> RMSNorm -> linear -> RMSNorm.

    (B, 3, T, H, W) -> (B, T, L, C) with L = (H // p) * (W // p). The first norm runs over the
    flattened patch pixels in (channel, row, column) order; the projection is the release's
    patch convolution written as one matmul.
    """

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        pixels = in_chans * patch_size * patch_size
        self.norm_pixels = RMSNorm(pixels)
        self.proj = nn.Linear(pixels, embed_dim)
        self.norm = RMSNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, hh, ww = x.shape
        p = self.patch_size
        h, w = hh // p, ww // p
        x = x.view(b, c, t, h, p, w, p).permute(0, 2, 3, 5, 1, 4, 6).reshape(b, t, h * w, c * p * p)
        return self.norm(self.proj(self.norm_pixels(x)))


def sincos_3d(dim: int, t: int, h: int, w: int) -> torch.Tensor:
    """Fixed 3-D sine-cosine table (t*h*w, dim): 3/4 of the channels encode (h, w), 1/4 encode t.

    Used only to initialise the learnable table (the release initialises the same way).
    """
    if dim % 16:
        raise ValueError(f"sincos table needs dim divisible by 16, got {dim}")

    def one_d(channels: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(channels // 2, dtype=np.float64) / (channels / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    spatial_dim, temporal_dim = dim // 4 * 3, dim // 4
    gh, gw = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    spatial = np.concatenate([one_d(spatial_dim // 2, gh), one_d(spatial_dim // 2, gw)], axis=1)
    temporal = one_d(temporal_dim, np.arange(t))
    table = np.concatenate(
        [np.repeat(temporal[:, None], h * w, axis=1), np.repeat(spatial[None], t, axis=0)], axis=-1
    )
    return torch.from_numpy(table.reshape(t * h * w, dim)).float()


class GlobalPosEmbed(nn.Module):
    """Learnable positional table on a reference grid, refined by a depth-wise 3-D conv and
    interpolated to any input grid (linear in time, then bicubic in space).

    ``forward(t, h, w)`` -> (t*h*w, C) positions for the patch tokens; ``cls`` is the class
    token's entry. In eval mode without autograd the interpolated table is cached per grid
    (and recomputed if the parameters change).
    """

    def __init__(self, embed_dim: int, grid: tuple[int, int, int], kernel: int = 1) -> None:
        super().__init__()
        t, h, w = grid
        self.grid = (t, h, w)
        self.table = nn.Parameter(sincos_3d(embed_dim, t, h, w).T.reshape(1, embed_dim, t, h, w).clone())
        self.cls = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.proj = nn.Conv3d(embed_dim, embed_dim, kernel, padding=kernel // 2, groups=embed_dim)
        with torch.no_grad():  # identity at init, as in the release
            self.proj.weight.zero_()
            self.proj.weight[:, :, kernel // 2, kernel // 2, kernel // 2] = 1.0
            self.proj.bias.zero_()
        self._cache: dict[tuple, torch.Tensor] = {}

    def train(self, mode: bool = True) -> GlobalPosEmbed:
        self._cache.clear()
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, t: int, h: int, w: int) -> torch.Tensor:
        # not while torch.export traces: its tensors must not outlive the trace in the cache
        cacheable = not self.training and not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        if not cacheable:
            return self._compute(t, h, w)
        key = (t, h, w, self.table.device, self.table._version, self.proj.weight._version,
               self.proj.bias._version)
        if key not in self._cache:
            self._cache.clear()  # one grid at a time is the common case; keep memory flat
            self._cache[key] = self._compute(t, h, w)
        return self._cache[key]

    def _compute(self, t: int, h: int, w: int) -> torch.Tensor:
        pos = interpolate_table(self.proj(self.table), (t, h, w))  # (1, C, t, h, w)
        return pos[0].flatten(1).T


def interpolate_table(table: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Resize a positional table (1, C, T0, H0, W0) to (1, C, t, h, w): linear in time first,
    then bicubic in space (align_corners=False), exactly in the release's order."""
    _, c, t0, h0, w0 = table.shape
    t, h, w = grid
    if t != t0:
        seq = table.permute(0, 3, 4, 1, 2).reshape(h0 * w0, c, t0)
        seq = F.interpolate(seq, size=t, mode="linear", align_corners=False)
        table = seq.reshape(1, h0, w0, c, t).permute(0, 3, 4, 1, 2)
    if (h, w) != (h0, w0):
        frames = table[0].permute(1, 0, 2, 3)  # (t, C, H0, W0)
        frames = F.interpolate(frames, size=(h, w), mode="bicubic", align_corners=False)
        table = frames.permute(1, 0, 2, 3)[None]
    return table
