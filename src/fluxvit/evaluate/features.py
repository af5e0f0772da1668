"""Features of videos, labelled or not, written to one safetensors file (``fluxvit features``).

Per video (or per window of a long video, :mod:`fluxvit.data.windows`): the pooled clip
embedding (the projector's output of the head nearest the budget, averaged over the views: the
feature alignment and distillation use); optionally every kept token's feature after the last
block with its (t, y, x) position on the sampling grid and, when a budget cuts the grid, the
flat index the selector kept. The file says how it was made: model, checkpoint, grid, budget,
head, views, selector, device and dtype in its metadata, with the input videos (row ``index[i]``
of the tensors is input ``videos[index[i]]``) and the broken ones, which are skipped.

Tensors (M rows, one per video or window; V views; N tokens; C and D the widths):

=============  ====================  ===================================================
``features``   (M, D) float32        pooled clip embeddings, mean over the views
``index``      (M,) int64            which input (position in the metadata's ``videos``)
``labels``     (M,) int64            class ids, when the input was an annotation file/folder
``start_s``    (M,) float64          window start in seconds (``--window`` only); ``end_s``
``tokens``     (M, V, N, C) float32  ``--tokens``: token features (class token excluded)
``positions``  (M, V, N, 3) int64    ``--tokens``: (t, y, x) of each token, in patches
``kept``       (M, V, N) int64       ``--tokens`` with a budget: flat index into T*h*w
=============  ====================  ===================================================

Everything is held in memory until the one atomic write, so the size of ``--tokens`` output is
checked against ``FLUXVIT_MAX_FEATURE_BYTES`` before the first video is decoded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from fluxvit import distributed, limits
from fluxvit.atomic import atomic_write
from fluxvit.data.annotations import Annotations, VideoRecord
from fluxvit.data.preprocessing import preprocessing_of
from fluxvit.errors import ConfigError
from fluxvit.evaluate.runner import Views, check_finite, check_loading, forward_views, run_views, view_loader
from fluxvit.flux.grid import Grid
from fluxvit.placement import Placement

FORMAT = "fluxvit-features/1"
UNLABELLED = -1  # the label of a video given as a plain path


@dataclass(frozen=True)
class FeatureSummary:
    """What :func:`extract_features` wrote: the file, its rows, the broken inputs skipped."""

    path: Path
    rows: int
    inputs: int
    broken: list[str]
    shapes: dict[str, list[int]]

    def to_dict(self) -> dict:
        return {"out": str(self.path), "rows": self.rows, "inputs": self.inputs, "broken": len(self.broken),
                "tensors": self.shapes}


def unlabelled(paths: Sequence[str | os.PathLike], name: str = "inputs") -> Annotations:
    """Plain video paths as annotations without labels (each labelled :data:`UNLABELLED`)."""
    records = tuple(VideoRecord(Path(p), UNLABELLED, f"input {i + 1}") for i, p in enumerate(paths))
    if not records:
        raise ConfigError(f"{name}: no video to extract features from")
    return Annotations(records, None, Path(name))


def token_positions(kept: torch.Tensor | None, grid: Grid, patch_size: int, views: int) -> torch.Tensor:
    """(V, N, 3) (t, y, x) patch coordinates of the tokens: of ``kept`` (V, N) flat indices into
    T*h*w, or of every token in order when nothing was cut."""
    t, h, w = grid.patch_grid(patch_size)
    flat = kept if kept is not None else torch.arange(t * h * w).expand(views, -1)
    return torch.stack([flat // (h * w), (flat % (h * w)) // w, flat % w], dim=-1)


def check_output_size(rows: int, views: Views, tokens: int, width: int) -> None:
    """The in-memory size of per-token output (float32 features + three int64 coordinates and
    the kept index per token) against its cap, before any work."""
    per_row = views.clips * views.crops * tokens * (4 * width + 8 * 4)
    limits.FEATURE_BYTES.check(rows * per_row, f"--tokens for {rows} videos x {views} views x {tokens} tokens")


class _Rows:
    """The rows being collected, keyed (video, window number): the sum and count of the views'
    embeddings, the label, window times, and with ``tokens`` each view's token features and kept
    indices; per-token output is counted against ``FLUXVIT_MAX_FEATURE_BYTES`` as it grows (a
    long video's window count is known only once it is read)."""

    def __init__(self, tokens: bool, views: Views, n: int, width: int) -> None:
        self.rows: dict[tuple[int, int], dict] = {}
        self.tokens, self.views, self.n, self.width = tokens, views, n, width

    def add(self, key: tuple[int, int], emb: torch.Tensor, label: int, tok=None, kept=None, **times) -> None:
        row = self.rows.get(key)
        if row is None:
            if self.tokens:
                check_output_size(len(self.rows) + 1, self.views, self.n, self.width)
            row = self.rows[key] = {"sum": 0, "views": 0, "label": label, "tokens": [], "kept": [], **times}
        row["sum"] = row["sum"] + emb
        row["views"] += 1
        if tok is not None:
            row["tokens"].append(tok)
            row["kept"].append(kept)

    def add_views(self, _logits, emb, labels, ids, tok=None, kept=None) -> None:
        """:func:`run_views`'s ``on_batch``: each view to its video's row."""
        for v, vid in enumerate(ids.tolist()):
            self.add((vid, 0), emb[v], int(labels[v]), None if tok is None else tok[v],
                     None if kept is None else kept[v])


def _window_rows(model, annotations: Annotations, mine: list[int], grid: Grid, window: float, stride: float,
                 views: Views, batch_size: int, budget: int | None, head: int, selector: str,
                 placement: Placement, tokens: bool, collect: _Rows, progress: bool) -> list[str]:
    """Collect one row per window of the videos ``mine`` (one decoding pass each); returns the
    broken videos' one-line errors."""
    from fluxvit.evaluate.predict import window_batches

    per_window = views.clips * views.crops
    broken: list[str] = []
    videos = mine
    if progress:
        from tqdm import tqdm

        videos = tqdm(mine, desc="features", unit="video", leave=False)
    with torch.no_grad():
        for vid in videos:  # one video at a time: the same file listed twice is two inputs
            label, number = annotations.records[vid].label, 0
            for batch in window_batches([annotations.records[vid].path], grid, window, stride, views, batch_size,
                                        preprocessing=preprocessing_of(model)):
                if batch.error is not None:
                    broken.append(batch.error)
                    break
                out = forward_views(model, batch.video, budget, head, placement, selector, tokens)
                check_finite(out.logits, model,
                             lambda r, b=batch: f"{b.source} at {b.windows[r // per_window].start:.2f} s")
                for r in range(out.logits.shape[0]):
                    w = batch.windows[r // per_window]
                    collect.add((vid, number + r // per_window), out.embeddings[r], label,
                                None if out.tokens is None else out.tokens[r],
                                None if out.kept is None else out.kept[r], start=w.start, end=w.end)
                number += len(batch.windows)
    return broken


def extract_features(
    model, annotations: Annotations, out: str | os.PathLike, grid: Grid, views: Views = Views(),
    tokens: bool = False, workers: int = 0, batch_size: int = 1, placement: Placement = Placement(),
    progress: bool = False, selector: str = "group_dynamic", checkpoint: str | None = None,
    window: float | None = None, stride: float | None = None,
) -> FeatureSummary:
    """Features of every readable video of ``annotations`` at ``grid`` (cut to its budget by
    ``selector``) over ``views``, to the safetensors file ``out`` (see the module's table); with
    ``window`` (seconds; ``stride`` default: the window), one row per window of each video,
    decoded in one pass. Under ``torchrun`` each rank extracts its share of the videos and rank
    0 writes everyone's rows."""
    from safetensors.torch import save_file

    check_loading(batch_size, workers)
    grid.check_size(model.patch_size)
    n = grid.num_tokens(model.patch_size)
    budget = n if grid.budget else None
    head = model.resolve_head(n)
    if window is not None:
        from fluxvit.data.windows import check_window

        stride = window if stride is None else stride
        check_window(window, stride)
    elif stride is not None:
        raise ConfigError("a stride goes with a window (the length of each window)")
    if tokens and window is None:
        check_output_size(len(annotations), views, n, model.config.embed_dim)
    job = distributed.current()
    mine = distributed.shard(list(range(len(annotations))), job)
    collect = _Rows(tokens, views, n, model.config.embed_dim)
    model.to(placement.device).eval()
    if window is None:
        loader = view_loader(annotations, grid, views, workers, mine, batch_size, preprocessing_of(model))
        stats = run_views(model, loader, budget, head, collect.add_views, placement, progress=progress,
                          desc="features", selector=selector, video_name=lambda i: str(annotations.records[i].path),
                          with_tokens=tokens)
        broken = list(stats.broken)
    else:
        broken = _window_rows(model, annotations, mine, grid, window, stride, views, batch_size, budget, head,
                              selector, placement, tokens, collect, progress)
    rows = collect.rows
    if job.distributed:
        parts = distributed.gather_objects((rows, broken), job)
        rows, broken = {}, []
        for part_rows, part_broken in parts:
            rows.update(part_rows)  # ranks hold disjoint videos
            broken += part_broken
    order = sorted(rows)  # (video, window): inputs in order, each video's windows in time order
    if not order:
        first = f" (the first: {broken[0]})" if broken else ""
        raise ConfigError(f"{annotations.csv}: no video could be read{first}; no features written")
    tensors = {
        "features": torch.stack([rows[k]["sum"] / rows[k]["views"] for k in order]).contiguous(),
        "index": torch.tensor([k[0] for k in order], dtype=torch.int64),
    }
    if window is not None:
        tensors["start_s"] = torch.tensor([rows[k]["start"] for k in order], dtype=torch.float64)
        tensors["end_s"] = torch.tensor([rows[k]["end"] for k in order], dtype=torch.float64)
    if any(rows[k]["label"] != UNLABELLED for k in order):
        tensors["labels"] = torch.tensor([rows[k]["label"] for k in order], dtype=torch.int64)
    if tokens:
        tensors["tokens"] = torch.stack([torch.stack(rows[k]["tokens"]) for k in order]).contiguous()
        if budget is not None:
            tensors["kept"] = torch.stack([torch.stack(rows[k]["kept"]) for k in order]).to(torch.int64)
        kept_all = tensors.get("kept")
        tensors["positions"] = torch.stack([
            token_positions(None if kept_all is None else kept_all[j], grid, model.patch_size,
                            views.clips * views.crops) for j in range(len(order))]).to(torch.int64).contiguous()
    out = Path(out)
    metadata = {
        "format": FORMAT,
        "model": str(getattr(model, "name", None) or ""),
        "checkpoint": str(checkpoint or ""),
        "grid": str(grid.with_budget(None)),
        "budget": str(n),
        "head": str(head),
        "views": str(views),
        "window_s": "" if window is None else f"{window:g}",
        "stride_s": "" if window is None else f"{stride:g}",
        "selector": selector,
        "feature": f"projector {head} output (clip embedding), mean over views"
                   + (" of each window" if window is not None else ""),
        "videos": json.dumps([str(r.path) for r in annotations.records]),
        "classes": json.dumps(list(annotations.classes or model.class_names or [])),
        "broken": json.dumps(broken),
        **placement.to_dict(),
    }
    if job.is_main:
        with atomic_write(out) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
    return FeatureSummary(out, len(order), len(annotations), broken,
                          {k: list(v.shape) for k, v in tensors.items()})
