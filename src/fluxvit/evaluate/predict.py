"""Classifying videos, and showing which tokens the model kept."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fluxvit.data.annotations import VIDEO_EXTENSIONS, find_videos
from fluxvit.data.preprocessing import Preprocessing, preprocessing_of
from fluxvit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
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


def read_views(path: str | os.PathLike, grid: Grid, views: Views, reader: VideoReader | None = None,
               preprocessing: Preprocessing = Preprocessing()) -> torch.Tensor:
    """Normalised views (clips * crops, 3, T, R, R) of one video, sampled and resized as
    ``preprocessing`` says (a model's: :func:`~fluxvit.data.preprocessing.preprocessing_of`);
    raises VideoError if unreadable."""
    reader = reader or PyAVReader()
    idx = preprocessing.sampler().views(reader.num_frames(path), grid.frames, views.clips)  # (K, T)
    return clip_views(reader.read(path, idx.flatten()).unflatten(0, idx.shape), grid, views, preprocessing)


def clip_views(frames: torch.Tensor, grid: Grid, views: Views, preprocessing: Preprocessing = Preprocessing()
               ) -> torch.Tensor:
    """uint8 (clips, T, H, W, 3) -> normalised views (clips * crops, 3, T, R, R), R = the grid's."""
    transform = preprocessing.transform(views.crops)
    return torch.cat([transform(clip, grid.height) for clip in frames])


def _probabilities(model, video: torch.Tensor, budget: int | None, selector: str, placement: Placement,
                   name: Callable[[int], str]) -> torch.Tensor:
    """Softmax (rows, K), fp32 on the CPU, of the model (in eval mode, on ``placement``) over the
    views ``video`` (rows, 3, T, R, R); non-finite logits are an error naming ``name(row)``."""
    with torch.no_grad(), placement.autocast():
        logits = model(video.to(placement.device), num_tokens=budget, selector=selector).float().cpu()
    check_finite(logits, model, name)
    return logits.softmax(-1)


def _top(probs: torch.Tensor, topk: int, names: Sequence[str] | None) -> list[tuple[str, float]]:
    """The ``topk`` best (class name or id, probability) pairs of probabilities (K,)."""
    values, ids = probs.topk(min(topk, probs.numel()))
    return [((names[i] if names else str(i)), float(v)) for v, i in zip(values.tolist(), ids.tolist())]


def predict_video(
    model, path: str | os.PathLike, grid: Grid, views: Views = Views(), topk: int = 5,
    reader: VideoReader | None = None, selector: str = "group_dynamic", placement: Placement = Placement(),
) -> Prediction:
    """Softmax averaged over the views of ``path`` at ``grid`` (and its budget, kept by
    ``selector``), computed on ``placement`` (the model is moved there)."""
    check_topk(topk)
    grid.check_size(model.patch_size)
    budget = grid.num_tokens(model.patch_size)
    video = read_views(path, grid, views, reader, preprocessing_of(model))
    model.to(placement.device).eval()
    probs = _probabilities(model, video, budget if grid.budget else None, selector, placement, lambda _i: str(path))
    top = _top(probs.mean(0), topk, model.class_names)
    return Prediction(str(path), top, grid.shape, budget, placement)


def show_tokens(
    model, path: str | os.PathLike, grid: Grid, out: str | os.PathLike, reader: VideoReader | None = None,
    selector: str = "group_dynamic", placement: Placement = Placement(),
) -> Path:
    """Write a PNG of the first view's frames with the kept tokens bright and the dropped dimmed."""
    video = read_views(path, grid, Views(1, 1), reader, preprocessing_of(model))[:1]  # (1, 3, T, R, R)
    return save_png(token_picture(model, video, grid, selector, placement), out)


def token_picture(model, video: torch.Tensor, grid: Grid, selector: str = "group_dynamic",
                  placement: Placement = Placement()) -> np.ndarray:
    """RGB uint8 mosaic of one normalised view ``video`` (1, 3, T, R, R): its frames side by side,
    the tokens the model keeps at ``grid``'s budget bright and the dropped dimmed."""
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
    return mosaic.repeat(scale, 0).repeat(scale, 1)


def classify_views(model, video: torch.Tensor, per_video: int, budget: int | None, topk: int,
                   selector: str = "group_dynamic", placement: Placement = Placement(),
                   name: Callable[[int], str] = str) -> list[list[tuple[str, float]]]:
    """The top-k (class name or id, probability) pairs of each video in ``video`` (videos *
    ``per_video`` views, 3, T, R, R; a video's views consecutive), softmax averaged over its
    views; non-finite outputs are an error naming ``name(video number)``."""
    probs = _probabilities(model, video, budget, selector, placement, lambda row: name(row // per_video))
    return [_top(p, topk, model.class_names) for p in probs.unflatten(0, (-1, per_video)).mean(1)]


# ----------------------------------------------------------------------------- many videos
def expand_videos(inputs: Sequence[str | os.PathLike], extensions: Sequence[str] = VIDEO_EXTENSIONS) -> list[Path]:
    """Files as given (any name; a missing one stays, to be reported as an error row) and the
    videos under each folder by extension (:func:`~fluxvit.data.annotations.find_videos`: the
    same search as a folder dataset's, recursive, sorted, hidden entries skipped, capped by
    ``FLUXVIT_MAX_LISTED_VIDEOS``). A folder with no such file stays too, to be reported ("not
    a regular file")."""
    wanted = tuple({e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions})
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        # os.path.isdir, not Path.is_dir: it says False (for the file check to word) where the
        # path is too long or holds a NUL byte, instead of raising
        found = find_videos(path, len(out), wanted) if os.path.isdir(path) else []
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
    pre = preprocessing_of(model)
    dataset = SkipBroken(VideoViewDataset(records, grid.with_budget(None), sampler=pre.sampler(),
                                          num_clips=views.clips, transform=pre.transform(views.crops)))
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_clips, num_workers=workers,
                        prefetch_factor=2 if workers else None)
    budget = grid.num_tokens(model.patch_size) if grid.budget else None
    tokens = budget or grid.num_patches(model.patch_size)
    model.to(placement.device).eval()
    for batch in loader:
        ready: dict[int, Prediction | PredictionError] = {
            i: PredictionError(str(paths[i]), message) for i, message in zip(batch.broken_index, batch.broken)}
        if len(batch):
            inputs = batch.index.tolist()
            tops = classify_views(model, batch.video.flatten(0, 1), batch.video.shape[1], budget, topk, selector,
                                  placement, lambda row, inputs=inputs: str(paths[inputs[row]]))
            for i, top in zip(inputs, tops):
                ready[i] = Prediction(str(paths[i]), top, grid.shape, tokens, placement)
        yield from (ready[i] for i in sorted(ready))


# ----------------------------------------------------------------------------- long videos, window by window
@dataclass
class WindowPrediction(Prediction):
    """Top-k classes of one window [``start``, ``end``) seconds of a long video or a stream."""

    start: float = 0.0
    end: float = 0.0

    def to_dict(self) -> dict:
        row = super().to_dict()
        return {"video": row.pop("video"), "start": round(self.start, 3), "end": round(self.end, 3), **row}


def predict_windows(
    model, sources: Sequence[str | os.PathLike], grid: Grid, window: float, stride: float, views: Views = Views(),
    topk: int = 5, batch_size: int = 1, selector: str = "group_dynamic", placement: Placement = Placement(),
    live: bool = False, stream_format: str | None = None, stop: threading.Event | None = None,
) -> Iterator[WindowPrediction | PredictionError]:
    """Classify each source window by window (:func:`fluxvit.data.windows.iter_windows`: one
    sequential decoding pass, memory flat in the length): every window's frames go through the
    views and the model as :func:`predict_video` sends a whole video, ``batch_size`` windows per
    forward. Sources in order, each one's windows in time order; a source that cannot be read
    (or breaks off midway, after its windows so far) yields a :class:`PredictionError` and the
    next one is read. ``live``: the sources are streams (``stream_format``: FFmpeg's input
    format), read until they end; ``stop``, once set, ends the run after the window in hand.
    The arguments are checked when this is called, before anything is read."""
    from fluxvit.data.windows import check_window

    check_topk(topk)
    check_window(window, stride)
    check_loading(batch_size, 0)
    grid.check_size(model.patch_size)
    budget = grid.num_tokens(model.patch_size)
    return _predict_windows(model, list(sources), grid, window, stride, views, topk, batch_size, selector, placement,
                            live, stream_format, stop, budget if grid.budget else None, budget)


@dataclass
class WindowBatch:
    """Up to ``batch_size`` consecutive windows of one source and their normalised views
    ``video`` (windows * V, 3, T, R, R), window-major; or, when the source could not be read or
    broke off (after its windows so far), its one-line ``error`` and no windows."""

    source: str
    windows: list
    video: torch.Tensor | None = None
    error: str | None = None


def window_batches(sources: Sequence[str | os.PathLike], grid: Grid, window: float, stride: float,
                   views: Views = Views(), batch_size: int = 1, live: bool = False,
                   stream_format: str | None = None, stop: threading.Event | None = None,
                   preprocessing: Preprocessing = Preprocessing()) -> Iterator[WindowBatch]:
    """Each source window by window (:func:`fluxvit.data.windows.iter_windows`: one sequential
    decoding pass, memory flat in the length), ``batch_size`` windows at a time, each window's
    frames through the same views and preprocessing as a whole video's (:func:`clip_views`).
    Sources in order; one that cannot be read ends in a batch with its ``error``, and the next
    is read. ``stop``, once set, ends the run after the batch in hand."""
    import itertools

    from fluxvit.data.windows import iter_windows
    from fluxvit.errors import VideoError

    for source in sources:
        name = str(source)
        try:
            windows = iter_windows(source, window, stride, grid.frames, views.clips, grid.height, live=live,
                                   offsets=preprocessing.view_offsets,
                                   format=stream_format, stop=stop)
            while chunk := list(itertools.islice(windows, batch_size)):
                video = torch.cat([clip_views(w.frames.unflatten(0, (views.clips, grid.frames)), grid, views,
                                              preprocessing) for w in chunk])
                yield WindowBatch(name, chunk, video)
        except VideoError as e:
            yield WindowBatch(name, [], error=str(e))
        if stop is not None and stop.is_set():
            return


def _predict_windows(model, sources, grid: Grid, window: float, stride: float, views: Views, topk: int,
                     batch_size: int, selector: str, placement: Placement, live: bool, stream_format: str | None,
                     stop: threading.Event | None, budget: int | None, tokens: int
                     ) -> Iterator[WindowPrediction | PredictionError]:
    per_window = views.clips * views.crops
    model.to(placement.device).eval()
    for batch in window_batches(sources, grid, window, stride, views, batch_size, live, stream_format, stop,
                                preprocessing_of(model)):
        if batch.error is not None:
            yield PredictionError(batch.source, batch.error)
            continue
        chunk, name = batch.windows, batch.source
        where = lambda i, name=name, chunk=chunk: f"{name} at {chunk[i // per_window].start:.2f} s"  # noqa: E731
        probs = _probabilities(model, batch.video, budget, selector, placement, where)
        for w, p in zip(chunk, probs.unflatten(0, (len(chunk), per_window)).mean(1)):
            yield WindowPrediction(name, _top(p, topk, model.class_names), grid.shape, tokens, placement,
                                   start=w.start, end=w.end)


PREDICTION_FORMATS = (".csv", ".jsonl")


class PredictionWriter:
    """Writes results to an open text file as they come: ``.csv`` one row a video (the top class
    and probability, the top-k as ``name:prob;...``, the grid, tokens, device, dtype, or the
    error), ``.jsonl`` one JSON object a line. Flushed after every row. ``timeline``: the rows are
    windows (:class:`WindowPrediction`), with their ``start`` and ``end`` seconds after the video."""

    COLUMNS = ("video", "label", "prob", "top", "grid", "tokens", "device", "dtype", "error")
    TIMELINE = ("start", "end")

    def __init__(self, file, kind: str, timeline: bool = False) -> None:
        import csv

        self.file, self.kind = file, kind
        self.columns = self.COLUMNS[:1] + (self.TIMELINE if timeline else ()) + self.COLUMNS[1:]
        self._csv = csv.writer(file) if kind == ".csv" else None
        if self._csv is not None:
            self._csv.writerow(self.columns)

    def write(self, result: Prediction | PredictionError) -> None:
        if self._csv is None:
            self.file.write(json.dumps(result.to_dict()) + "\n")
        else:
            row = {"video": result.path}
            if isinstance(result, PredictionError):
                row["error"] = result.error
            else:
                label, prob = result.top[0]
                row |= {"label": label, "prob": f"{prob:.5f}", "top": ";".join(f"{n}:{p:.5f}" for n, p in result.top),
                        "grid": result.grid, "tokens": result.budget, **result.placement.to_dict()}
            if isinstance(result, WindowPrediction):
                row |= {"start": f"{result.start:.3f}", "end": f"{result.end:.3f}"}
            self._csv.writerow([row.get(c, "") for c in self.columns])
        self.file.flush()
