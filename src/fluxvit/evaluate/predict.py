"""Classifying videos, and showing which tokens the model kept."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fluxvit.data.annotations import VIDEO_EXTENSIONS
from fluxvit.data.sampling import SegmentSampler
from fluxvit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform
from fluxvit.data.video import PyAVReader, VideoReader
from fluxvit.errors import ConfigError
from fluxvit.evaluate.runner import Views, check_finite, check_loading
from fluxvit.evaluate.visualize import save_png, token_mosaic
from fluxvit.flux.grid import Grid
from fluxvit.placement import Placement
from fluxvit.typecheck import show


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


def check_topk(topk: int) -> None:
    """How many classes to report: a positive integer (more than the model has: all of them)."""
    if not isinstance(topk, int) or isinstance(topk, bool) or topk < 1:
        raise ConfigError(f"top-k must be a positive integer, got {show(topk)}")


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
    check_topk(topk)
    grid.check_size(model.patch_size)
    budget = grid.num_tokens(model.patch_size)
    video = read_views(path, grid, views, reader).to(placement.device)
    model.to(placement.device).eval()
    with torch.no_grad(), placement.autocast():
        logits = model(video, num_tokens=budget if grid.budget else None, selector=selector).float().cpu()
    check_finite(logits, model, lambda _i: str(path))
    probs = logits.softmax(-1).mean(0)
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


# ----------------------------------------------------------------------------- many videos
def expand_videos(inputs: Sequence[str | os.PathLike], extensions: Sequence[str] = VIDEO_EXTENSIONS) -> list[Path]:
    """Files as given (any name; a missing one stays, to be reported as an error row) and the
    videos under each folder, recursively, by extension (case-insensitive), sorted. A folder
    with no such file stays too, to be reported ("not a regular file")."""
    wanted = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        # os.path.isdir, not Path.is_dir: it says False (for the file check to word) where the
        # path is too long or holds a NUL byte, instead of raising
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in wanted and not os.path.isdir(p)) \
            if os.path.isdir(path) else []
        out += found or [path]
    return out


@dataclass
class PredictionError:
    """A video that could not be classified, and why (one line)."""

    path: str
    error: str

    def to_dict(self) -> dict:
        return {"video": self.path, "error": self.error}


def predict_videos(
    model, paths: Sequence[str | os.PathLike], grid: Grid, views: Views = Views(), topk: int = 5,
    batch_size: int = 4, workers: int = 0, selector: str = "group_dynamic", placement: Placement = Placement(),
) -> Iterator[Prediction | PredictionError]:
    """Classify many videos, in input order, one result each: videos are decoded in ``workers``
    DataLoader processes while the model runs ``batch_size`` videos (all their views) per
    forward; a broken video yields a :class:`PredictionError` instead of stopping the run.
    Results are yielded as they are ready, so memory stays flat in the number of videos. The
    arguments are checked when this is called, before the first video is read."""
    check_topk(topk)
    check_loading(batch_size, workers)
    grid.check_size(model.patch_size)
    grid.num_tokens(model.patch_size)  # the budget fits the grid
    return _predict_batches(model, [Path(p) for p in paths], grid, views, topk, batch_size, workers, selector,
                            placement)


def _predict_batches(model, paths: list[Path], grid: Grid, views: Views, topk: int, batch_size: int, workers: int,
                     selector: str, placement: Placement) -> Iterator[Prediction | PredictionError]:
    from torch.utils.data import DataLoader

    from fluxvit.data.annotations import VideoRecord
    from fluxvit.data.datasets import SkipBroken, VideoViewDataset, collate_clips

    if not paths:
        return
    records = [VideoRecord(p, 0, f"input {i + 1}") for i, p in enumerate(paths)]
    dataset = SkipBroken(VideoViewDataset(records, grid.with_budget(None), num_clips=views.clips,
                                          transform=EvalTransform(num_crops=views.crops)))
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_clips, num_workers=workers,
                        prefetch_factor=2 if workers else None)
    budget = grid.num_tokens(model.patch_size) if grid.budget else None
    names = model.class_names
    k = min(topk, model.num_classes)
    shape = f"{grid.frames}x{grid.height}x{grid.width}"
    model.to(placement.device).eval()
    for batch in loader:
        ready: dict[int, Prediction | PredictionError] = {
            i: PredictionError(str(paths[i]), message) for i, message in zip(batch.broken_index, batch.broken)}
        if len(batch):
            b, v = batch.video.shape[:2]
            with torch.no_grad(), placement.autocast():
                logits = model(batch.video.flatten(0, 1).to(placement.device), num_tokens=budget,
                               selector=selector).float().cpu()
            rows = batch.index.repeat_interleave(v)  # logits row -> input
            check_finite(logits, model, lambda i, rows=rows: str(paths[int(rows[i])]))
            probs = logits.softmax(-1).unflatten(0, (b, v)).mean(1)  # (B, K)
            values, ids = probs.topk(k, dim=-1)
            for row, i in enumerate(batch.index.tolist()):
                pairs = zip(values[row].tolist(), ids[row].tolist())
                top = [((names[c] if names else str(c)), float(p)) for p, c in pairs]
                tokens = budget or grid.num_patches(model.patch_size)
                ready[i] = Prediction(str(paths[i]), top, shape, tokens, placement)
        yield from (ready[i] for i in sorted(ready))


PREDICTION_FORMATS = (".csv", ".jsonl")


class PredictionWriter:
    """Writes results to an open text file as they come: ``.csv`` one row a video (the top class
    and probability, the top-k as ``name:prob;...``, the grid, tokens, device, dtype, or the
    error), ``.jsonl`` one JSON object a line. Flushed after every row."""

    COLUMNS = ("video", "label", "prob", "top", "grid", "tokens", "device", "dtype", "error")

    def __init__(self, file, kind: str) -> None:
        import csv

        self.file, self.kind = file, kind
        self._csv = csv.writer(file) if kind == ".csv" else None
        if self._csv is not None:
            self._csv.writerow(self.COLUMNS)

    def write(self, result: Prediction | PredictionError) -> None:
        if self._csv is None:
            self.file.write(json.dumps(result.to_dict()) + "\n")
        elif isinstance(result, PredictionError):
            self._csv.writerow([result.path, "", "", "", "", "", "", "", result.error])
        else:
            label, prob = result.top[0]
            top = ";".join(f"{name}:{p:.5f}" for name, p in result.top)
            self._csv.writerow([result.path, label, f"{prob:.5f}", top, result.grid, result.budget,
                                *result.placement.to_dict().values(), ""])
        self.file.flush()
