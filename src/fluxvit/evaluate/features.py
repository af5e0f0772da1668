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
from fluxvit.errors import ConfigError
from fluxvit.evaluate.runner import Views, check_loading, run_views, view_loader
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


def extract_features(
    model, annotations: Annotations, out: str | os.PathLike, grid: Grid, views: Views = Views(),
    tokens: bool = False, workers: int = 0, batch_size: int = 1, placement: Placement = Placement(),
    progress: bool = False, selector: str = "group_dynamic", checkpoint: str | None = None,
) -> FeatureSummary:
    """Features of every readable video of ``annotations`` at ``grid`` (cut to its budget by
    ``selector``) over ``views``, to the safetensors file ``out`` (see the module's table).
    Under ``torchrun`` each rank extracts its share and rank 0 writes everyone's rows."""
    from safetensors.torch import save_file

    check_loading(batch_size, workers)
    grid.check_size(model.patch_size)
    n = grid.num_tokens(model.patch_size)
    budget = n if grid.budget else None
    head = model.resolve_head(n)
    if tokens:
        check_output_size(len(annotations), views, n, model.config.embed_dim)
    rows: dict[int, dict] = {}

    def on_batch(_logits, emb, labels, ids, tok=None, kept=None):
        for v, vid in enumerate(ids.tolist()):
            row = rows.setdefault(vid, {"sum": 0, "views": 0, "label": int(labels[v]), "tokens": [], "kept": []})
            row["sum"] = row["sum"] + emb[v]
            row["views"] += 1
            if tok is not None:
                row["tokens"].append(tok[v])
                row["kept"].append(None if kept is None else kept[v])

    job = distributed.current()
    loader = view_loader(annotations, grid, views, workers,
                         distributed.shard(list(range(len(annotations))), job), batch_size)
    stats = run_views(model, loader, budget, head, on_batch, placement, progress=progress, desc="features",
                      selector=selector, video_name=lambda i: str(annotations.records[i].path),
                      with_tokens=tokens)
    broken = list(stats.broken)
    if job.distributed:
        parts = distributed.gather_objects((rows, stats.broken), job)
        rows, broken = {}, []
        for part_rows, part_broken in parts:
            rows.update(part_rows)  # ranks hold disjoint videos
            broken += part_broken
    order = sorted(rows)
    if not order:
        raise ConfigError(f"{annotations.csv}: no video could be read, no features written")
    tensors = {
        "features": torch.stack([rows[i]["sum"] / rows[i]["views"] for i in order]).contiguous(),
        "index": torch.tensor(order, dtype=torch.int64),
    }
    if any(rows[i]["label"] != UNLABELLED for i in order):
        tensors["labels"] = torch.tensor([rows[i]["label"] for i in order], dtype=torch.int64)
    if tokens:
        tensors["tokens"] = torch.stack([torch.stack(rows[i]["tokens"]) for i in order]).contiguous()
        if budget is not None:
            tensors["kept"] = torch.stack([torch.stack(rows[i]["kept"]) for i in order]).to(torch.int64)
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
        "selector": selector,
        "feature": f"projector {head} output (clip embedding), mean over views",
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
