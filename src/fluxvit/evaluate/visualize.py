"""Pictures of token selection: the sampled frames with the kept tokens shown bright and the
dropped ones dimmed."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from fluxvit.atomic import atomic_write


def token_mosaic(
    frames: np.ndarray, kept: torch.Tensor | np.ndarray | None, patch_size: int, dim: float = 0.25,
    columns: int | None = None,
) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 and kept flat indices (N,) into T*(H/p)*(W/p) -> one RGB mosaic
    (rows x cols frames, 2 px gaps) with dropped patches dimmed to ``dim`` brightness and a
    1-px light border around each kept patch. ``kept=None`` shows every token as kept."""
    t, hh, ww, _ = frames.shape
    h, w = hh // patch_size, ww // patch_size
    keep = np.ones(t * h * w, dtype=bool)
    if kept is not None:
        keep[:] = False
        keep[np.asarray(kept).reshape(-1)] = True
    keep = keep.reshape(t, h, w)
    img = frames[:, : h * patch_size, : w * patch_size].astype(np.float32)
    scale = np.where(keep, 1.0, dim).repeat(patch_size, 1).repeat(patch_size, 2)
    img *= scale[..., None]
    edge = np.zeros((t, h * patch_size, w * patch_size), dtype=bool)
    for axis in (1, 2):  # border pixels of kept patches
        idx = np.arange(edge.shape[axis]) % patch_size
        border = (idx == 0) | (idx == patch_size - 1)
        shape = [1, 1, 1]
        shape[axis] = -1
        edge |= border.reshape(shape) & keep.repeat(patch_size, 1).repeat(patch_size, 2)
    img[edge] = 0.6 * img[edge] + 0.4 * 255
    cols = columns or min(t, 8)
    rows = math.ceil(t / cols)
    gap = 2
    fh, fw = h * patch_size, w * patch_size
    out = np.full((rows * (fh + gap) - gap, cols * (fw + gap) - gap, 3), 255, dtype=np.uint8)
    for i in range(t):
        r, c = divmod(i, cols)
        out[r * (fh + gap): r * (fh + gap) + fh, c * (fw + gap): c * (fw + gap) + fw] = img[i].clip(0, 255)
    return out


def png_bytes(image: np.ndarray) -> bytes:
    """An RGB uint8 image encoded as PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image

    out = io.BytesIO()
    matplotlib.image.imsave(out, image, format="png")
    return out.getvalue()


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an RGB uint8 image as PNG, atomically."""
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_bytes(png_bytes(image))
    return path
