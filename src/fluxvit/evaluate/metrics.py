"""Multi-view accuracy: average each video's softmax over its views, then top-k and per class."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch


@dataclass
class ViewAccumulator:
    """Collects per-view logits by video id and scores the videos.

    ``add(logits (B, K), labels (B,), video_ids)`` any number of times, in any order (views of a
    video may arrive in different batches); ``result()`` averages softmax over each video's
    views.
    """

    num_classes: int
    _probs: dict = field(default_factory=lambda: defaultdict(lambda: 0.0))
    _views: dict = field(default_factory=lambda: defaultdict(int))
    _labels: dict = field(default_factory=dict)

    def add(self, logits: torch.Tensor, labels: torch.Tensor, video_ids) -> None:
        probs = logits.detach().float().softmax(dim=-1).cpu()
        for p, y, vid in zip(probs, labels.tolist(), video_ids):
            self._probs[vid] = self._probs[vid] + p
            self._views[vid] += 1
            self._labels[vid] = int(y)

    def __len__(self) -> int:
        return len(self._labels)

    def state(self) -> tuple[dict, dict, dict]:
        """Plain dicts (picklable: for gathering across ranks)."""
        return dict(self._probs), dict(self._views), dict(self._labels)

    def merge(self, state: tuple[dict, dict, dict]) -> None:
        """Add another accumulator's :meth:`state` (its videos' views) to this one."""
        probs, views, labels = state
        for vid, p in probs.items():
            self._probs[vid] = self._probs[vid] + p
        for vid, n in views.items():
            self._views[vid] += n
        self._labels.update(labels)

    def video_probs(self) -> tuple[list, torch.Tensor, torch.Tensor]:
        """(video ids, probs (V, K) averaged over views, labels (V,))."""
        ids = sorted(self._labels, key=str)
        if not ids:
            return [], torch.zeros(0, self.num_classes), torch.zeros(0, dtype=torch.long)
        probs = torch.stack([self._probs[v] / self._views[v] for v in ids])
        labels = torch.tensor([self._labels[v] for v in ids])
        return ids, probs, labels

    def result(self, per_class: bool = False, per_video: bool = False, per_video_top: int = 0) -> dict:
        """videos, views, top1, top5 (%); with ``per_class`` each class's top-1, with
        ``per_video`` each video's top-1 outcome ({video id: correct}), with ``per_video_top``
        each video's that many best classes ({video id: [(class id, probability)], best first;
        at most all classes})."""
        ids, probs, labels = self.video_probs()
        out = {"videos": len(ids), "views": int(sum(self._views.values()))}
        out.update(topk_accuracy(probs, labels, (1, 5)))
        if per_class:
            out["per_class"] = per_class_accuracy(probs, labels, self.num_classes)
        if per_video:
            out["per_video"] = dict(zip(ids, (probs.argmax(dim=1) == labels).tolist()))
        if per_video_top:
            values, classes = probs.topk(min(per_video_top, probs.shape[1]), dim=1)
            out["per_video_top"] = {vid: list(zip(c, v)) for vid, c, v in zip(ids, classes.tolist(), values.tolist())}
        return out


def topk_accuracy(probs: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict:
    """{"top1": %, "top5": %} for scores (V, K) and labels (V,); k is capped at K."""
    if len(labels) == 0:
        return {f"top{k}": float("nan") for k in ks}
    out = {}
    for k in ks:
        top = probs.topk(min(k, probs.shape[1]), dim=1).indices
        out[f"top{k}"] = 100.0 * (top == labels[:, None]).any(dim=1).float().mean().item()
    return out


def per_class_accuracy(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float | None]:
    """Top-1 accuracy (%) of each class; None for classes with no video."""
    pred = probs.argmax(dim=1)
    out: list[float | None] = []
    for c in range(num_classes):
        mask = labels == c
        out.append(100.0 * (pred[mask] == c).float().mean().item() if mask.any() else None)
    return out
