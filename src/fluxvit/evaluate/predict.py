"""Classifying videos, and showing which tokens the model kept."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fluxvit.data.sampling import SegmentSampler
from fluxvit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform
from fluxvit.data.video import PyAVReader, VideoReader
from fluxvit.evaluate.runner import Views
from fluxvit.evaluate.visualize import save_png, token_mosaic
from fluxvit.flux.grid import Grid
from fluxvit.placement import Placement


@dataclass
class Prediction:
    """Top-k classes of one video: ``(class name or id, probability)`` pairs, best first."""

    path: str
    top: list[tuple[str, float]]
    grid: str
    budget: int
    placement: Placement = Placement()

    def to_dict(self) -> dict:
        return {"video": self.path, "grid": self.grid, "tokens": self.budget, **self.placement.to_dict(),
                "top": [{"label": name, "prob": round(p, 5)} for name, p in self.top]}


def read_views(path: str | os.PathLike, grid: Grid, views: Views, reader: VideoReader | None = None) -> torch.Tensor:
    """Normalised views (clips * crops, 3, T, R, R) of one video; raises VideoError if unreadable."""
    reader = reader or PyAVReader()
    idx = SegmentSampler().views(reader.num_frames(path), grid.frames, views.clips)  # (K, T)
    frames = reader.read(path, idx.flatten()).unflatten(0, idx.shape)
    transform = EvalTransform(num_crops=views.crops)
    return torch.cat([transform(clip, grid.height) for clip in frames])


def predict_video(
    model, path: str | os.PathLike, grid: Grid, views: Views = Views(), topk: int = 5,
    reader: VideoReader | None = None, selector: str = "group_dynamic", placement: Placement = Placement(),
) -> Prediction:
    """Softmax averaged over the views of ``path`` at ``grid`` (and its budget, kept by
    ``selector``), computed on ``placement`` (the model is moved there)."""
    video = read_views(path, grid, views, reader).to(placement.device)
    budget = grid.num_tokens(model.patch_size)
    model.to(placement.device).eval()
    with torch.no_grad(), placement.autocast():
        logits = model(video, num_tokens=budget if grid.budget else None, selector=selector)
    probs = logits.float().softmax(-1).mean(0).cpu()
    k = min(topk, probs.numel())
    values, ids = probs.topk(k)
    names = model.class_names
    top = [((names[i] if names else str(i)), float(v)) for v, i in zip(values.tolist(), ids.tolist())]
    return Prediction(str(path), top, f"{grid.frames}x{grid.height}x{grid.width}", budget, placement)


def show_tokens(
    model, path: str | os.PathLike, grid: Grid, out: str | os.PathLike, reader: VideoReader | None = None,
    selector: str = "group_dynamic", placement: Placement = Placement(),
) -> Path:
    """Write a PNG of the first view's frames with the kept tokens bright and the dropped dimmed."""
    video = read_views(path, grid, Views(1, 1), reader)[:1]  # (1, 3, T, R, R)
    budget = grid.num_tokens(model.patch_size) if grid.budget else None
    model.to(placement.device).eval()
    with torch.no_grad(), placement.autocast():
        _, kept = model.forward_features(video.to(placement.device), num_tokens=budget, selector=selector,
                                         return_indices=True)
    kept = None if kept is None else kept.cpu()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    frames = ((video[0] * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 3, 0).numpy()
    mosaic = token_mosaic(np.ascontiguousarray(frames), None if kept is None else kept[0], model.patch_size)
    scale = max(1, 224 // frames.shape[1])  # small clips are drawn larger, pixel-exact
    return save_png(mosaic.repeat(scale, 0).repeat(scale, 1), out)
