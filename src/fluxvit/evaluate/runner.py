"""Running a model over videos: multi-view evaluation, Token Optimization scoring, clip features.

One loop (:func:`run_views`) serves all of them: it reads every video's views at a grid, runs
the model at a budget, and hands each batch's logits and clip embeddings to the caller.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.data import DataLoader, Subset

from fluxvit import distributed, limits
from fluxvit.data.annotations import Annotations
from fluxvit.data.datasets import BrokenClip, CountBroken, SkipBroken, VideoViewDataset, collate_clips, records_of
from fluxvit.data.preprocessing import Preprocessing, preprocessing_of
from fluxvit.data.sampling import SegmentSampler
from fluxvit.data.video import PyAVReader
from fluxvit.errors import ConfigError
from fluxvit.evaluate.metrics import ViewAccumulator
from fluxvit.evaluate.token_optimization import Score, ScoreManyFn, stored_grid
from fluxvit.flux.grid import Grid
from fluxvit.placement import Placement
from fluxvit.timing import Stopwatch
from fluxvit.typecheck import in_range, show

log = logging.getLogger(__name__)

_VIEWS_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


@dataclass(frozen=True)
class Views:
    """Test views per video: ``clips`` temporal clips x ``crops`` spatial crops."""

    clips: int = 1
    crops: int = 1

    def __post_init__(self) -> None:
        for name in ("clips", "crops"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"views: {name} must be an integer, got {show(value)}")
        if self.clips < 1 or self.crops not in (1, 2, 3):
            raise ConfigError(f"views {self}: need clips >= 1 and 1 to 3 crops")
        limits.VIEWS.check(self.clips * self.crops, f"views {self}")  # each view is a forward's worth

    @classmethod
    def parse(cls, text: str) -> Views:
        m = _VIEWS_RE.match(str(text))
        if not m:
            raise ConfigError(f"views {show(str(text))} is not CLIPSxCROPS (e.g. 4x3)")
        if max(len(m.group(1).lstrip("0")), len(m.group(2).lstrip("0"))) > 9:  # no cap comes near
            raise ConfigError(f"views {show(str(text))}: more views per video than the cap of "
                              f"{limits.VIEWS.value()} (raise it with {limits.VIEWS.setting})")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.clips}x{self.crops}"


def sampling_grid(model, budget: int | None) -> Grid:
    """The grid to sample for ``budget``: Token Optimization's stored choice, else the model's
    default grid (selection cuts it to the budget)."""
    chosen = stored_grid(model.checkpoint_meta, budget) if budget else None
    return chosen if chosen is not None else model.default_grid.with_budget(budget)


def check_loading(batch_size: int = 1, workers: int = 0) -> None:
    """Videos per forward and decoding processes: positive and non-negative integers within the
    caps :data:`~fluxvit.limits.BATCH_SIZE` and :data:`~fluxvit.limits.WORKERS`. Every loader
    here checks them before it starts; a command checks them first of all."""
    for key, value, lo, cap in (("batch size", batch_size, 1, limits.BATCH_SIZE),
                                ("workers", workers, 0, limits.WORKERS)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, got {show(value)}")
        if value < lo:
            raise ConfigError(f"{key} must be at least {lo}, got {value}")
        cap.check(value, key)


def check_finite(logits: torch.Tensor, model, videos: Callable[[int], str]) -> None:
    """Refuse outputs holding NaN or inf (weights that overflow, or fp16 overflowing where fp32
    does not), naming the checkpoint and the first such video: ``videos(i)`` names row i of
    ``logits``. The one check of every path from logits to a reported number."""
    bad = ~torch.isfinite(logits.reshape(len(logits), -1)).all(-1)
    if bool(bad.any()):
        source = getattr(model, "checkpoint_path", None) or getattr(model, "name", None) or "the model"
        raise ConfigError(f"{source}: its outputs for {videos(int(bad.nonzero()[0, 0]))} are NaN or inf "
                          "(the weights overflow at this precision; with fp16 or bf16, try fp32)")


def check_labels(model, annotations: Annotations) -> None:
    """A CSV whose labels exceed the model's classes, or whose class list (classes.txt) names the
    classes otherwise than the checkpoint does, is a user error, said before any work: label i
    must mean the model's class i, or every accuracy is wrong."""
    first = next((r for r in annotations.records if r.label >= model.num_classes), None)
    if first is not None:
        raise ConfigError(f"{first.source}: label {first.label} is outside the model's {model.num_classes} classes")
    ours, theirs = getattr(model, "class_names", None), annotations.classes
    if ours and theirs and list(ours) != list(theirs):
        i = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(ours), len(theirs)))
        shown = lambda names: repr(names[i]) if i < len(names) else "nothing"  # noqa: E731
        raise ConfigError(f"{annotations.csv}: its class list differs from the checkpoint's at class {i} "
                          f"({shown(theirs)} there, {shown(ours)} in the checkpoint); labels would mean other classes")


def view_loader(
    annotations: Annotations, grid: Grid, views: Views = Views(), workers: int = 0,
    indices: Sequence[int] | None = None, batch_size: int = 1, preprocessing: Preprocessing = Preprocessing(),
) -> CountBroken:
    """Batches of ``batch_size`` videos, (B, V, 3, T, R, R), decoded in ``workers`` processes,
    sampled and resized as ``preprocessing`` says (the model's: :func:`preprocessing_of`); broken
    videos skipped and counted."""
    check_loading(batch_size, workers)
    dataset = SkipBroken(VideoViewDataset(annotations, grid.with_budget(None), sampler=preprocessing.sampler(),
                                          num_clips=views.clips, transform=preprocessing.transform(views.crops)))
    if indices is not None:
        dataset = Subset(dataset, list(indices))
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_clips, num_workers=workers,
                        pin_memory=False)
    return CountBroken(loader, name=str(annotations.csv))


@dataclass
class RunStats:
    views: int = 0
    seconds: float = 0.0  # in the model's forward (device synchronised), decoding excluded
    broken: list[str] = field(default_factory=list)


@dataclass
class EvalResult:
    """What :func:`evaluate` measured: accuracy (%) over ``videos`` readable videos (``views``
    views in all), at ``grid`` (TxHxW) cut to ``budget`` tokens; GFLOPs per view (the paper's
    encoder count and the whole forward); measured ms per view in the forward; broken videos
    skipped (count and messages); optionally each class's top-1, each video's outcome and each
    video's best classes with their probabilities (for :mod:`fluxvit.evaluate.failures`)."""

    top1: float
    top5: float
    videos: int
    views: int
    grid: str
    budget: int
    views_per_video: str
    gflops: float
    gflops_total: float
    ms_per_view: float
    broken: int
    broken_videos: list[str]
    device: str = "cpu"
    dtype: str = "fp32"
    per_class: list[float | None] | None = None
    per_video: dict | None = None  # video id (CSV row) -> correct
    per_video_top: dict | None = None  # video id (CSV row) -> [(class id, probability)], best first

    def to_dict(self) -> dict:
        """A JSON-ready dict (the optional fields only when measured)."""
        optional = ("per_class", "per_video", "per_video_top")
        return {k: v for k, v in asdict(self).items() if v is not None or k not in optional}


@dataclass
class ViewOutputs:
    """One forward of views, fp32 on the CPU: ``logits`` (V, K), ``embeddings`` (V, D) - the
    clip embeddings of the head used (None for an exported model, which returns logits only) -
    and with tokens asked, ``tokens`` (V, N, C), the last block's token features without the
    class token, and ``kept`` (V, N), the selector's flat indices (None when nothing was cut)."""

    logits: torch.Tensor
    embeddings: torch.Tensor | None
    tokens: torch.Tensor | None = None
    kept: torch.Tensor | None = None


def forward_views(model, video: torch.Tensor, budget: int | None, head: int | None, placement: Placement,
                  selector: str = "group_dynamic", with_tokens: bool = False,
                  watch: Stopwatch | None = None) -> ViewOutputs:
    """Run ``model`` (already on ``placement``, in eval mode, under no_grad) on the normalised
    views ``video`` (V, 3, T, R, R), selecting ``budget`` tokens with ``selector``, through
    ``head`` (None: the nearest); the forward alone is timed by ``watch``."""
    exported = getattr(model, "logits_only", False)  # an artifact of `fluxvit export`
    if exported and with_tokens:
        raise ConfigError("an exported model returns logits only; token features need the checkpoint")
    video = video.to(placement.device, non_blocking=True)
    tokens = kept = emb = None
    with watch if watch is not None else contextlib.nullcontext(), placement.autocast():
        if exported:  # selection and head inside: logits only
            logits = model(video, num_tokens=budget, head=head, selector=selector)
        else:
            tokens, kept = model.forward_features(video, num_tokens=budget, selector=selector, return_indices=True)
            h = model.resolve_head(tokens.shape[1] - 1, head)
            emb = model.forward_head(tokens, h, pre_logits=True)
            logits = model.classify(emb, h)
    return ViewOutputs(logits.float().cpu(), None if emb is None else emb.float().cpu(),
                       tokens[:, 1:].float().cpu() if with_tokens else None,
                       kept.cpu() if with_tokens and kept is not None else None)


def run_views(
    model, loader: CountBroken, budget: int | None, head: int | None,
    on_batch: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None],
    placement: Placement = Placement(), progress: bool = False, desc: str = "eval",
    selector: str = "group_dynamic", video_name: Callable[[int], str] = str, with_tokens: bool = False,
) -> RunStats:
    """Run ``model`` over every view of every video on ``placement`` (the model is moved there),
    selecting ``budget`` tokens with ``selector`` (:func:`forward_views`). ``on_batch(logits (V,
    K), embeddings (V, D), labels (V,), video_ids (V,))``, fp32 on the CPU, receives each batch's
    views (embeddings None for an exported model, which returns logits only); non-finite logits
    are an error naming ``video_name(video id)``. ``with_tokens``: ``on_batch`` also gets ``tok``
    (V, N, C) and ``kept`` (V, N) (see :class:`ViewOutputs`) as keywords."""
    stats = RunStats()
    watch = Stopwatch(placement.device)
    model.to(placement.device).eval()
    iterator = loader
    if progress:
        from tqdm import tqdm

        iterator = tqdm(loader, desc=desc, unit="video", leave=False)
    with torch.no_grad():
        for batch in iterator:
            per_video = batch.video.shape[1]
            labels = batch.label.repeat_interleave(per_video)
            ids = batch.index.repeat_interleave(per_video)
            out = forward_views(model, batch.video.flatten(0, 1), budget, head, placement, selector, with_tokens,
                                watch)  # (B*V, 3, T, R, R) views
            check_finite(out.logits, model, lambda i, ids=ids: video_name(int(ids[i])))
            stats.views += out.logits.shape[0]
            if with_tokens:
                on_batch(out.logits, out.embeddings, labels, ids, tok=out.tokens, kept=out.kept)
            else:
                on_batch(out.logits, out.embeddings, labels, ids)
    stats.seconds = watch.seconds
    stats.broken = list(loader.skipped)
    return stats


def evaluate(
    model, annotations: Annotations, grid: Grid, views: Views = Views(), head: int | None = None,
    per_class: bool = False, workers: int = 0, progress: bool = False,
    indices: Sequence[int] | None = None, per_video: bool = False, selector: str = "group_dynamic",
    placement: Placement = Placement(), batch_size: int = 1, per_video_top: int = 0,
) -> EvalResult:
    """Multi-view accuracy of ``model`` at ``grid`` (its budget, if any, selects tokens with
    ``selector``), over the videos of ``annotations`` (or its rows ``indices``), ``batch_size``
    videos per forward, on ``placement``; see :class:`EvalResult`. ``per_video_top``: also
    each video's that many best classes (under torchrun, every rank's videos)."""
    check_labels(model, annotations)
    check_loading(batch_size, workers)
    grid.check_size(model.patch_size)
    budget = grid.num_tokens(model.patch_size) if grid.budget else None
    if head is not None:
        model.resolve_head(budget or grid.num_patches(model.patch_size), head)  # before any decoding
    acc = ViewAccumulator(model.num_classes)
    job = distributed.current()  # under torchrun: this rank's share of the videos, then everyone's
    rows = distributed.shard(list(indices) if indices is not None else list(range(len(annotations))), job)
    loader = view_loader(annotations, grid, views, workers, rows, batch_size, preprocessing_of(model))
    stats = run_views(model, loader, budget, head, lambda lg, _e, y, ids: acc.add(lg, y, ids.tolist()),
                      placement, progress=progress, desc=f"eval {grid}", selector=selector,
                      video_name=_names(annotations))
    if job.distributed:
        parts = distributed.gather_objects((acc.state(), stats.views, stats.seconds, stats.broken), job)
        acc, stats = ViewAccumulator(model.num_classes), RunStats()
        for state, views_seen, seconds, broken in parts:
            acc.merge(state)
            stats.views, stats.seconds, stats.broken = stats.views + views_seen, stats.seconds + seconds, \
                stats.broken + broken
    flops = model.estimate_flops(grid)
    return EvalResult(
        **acc.result(per_class=per_class, per_video=per_video, per_video_top=per_video_top),
        grid=grid.shape, budget=budget or grid.num_patches(model.patch_size),
        views_per_video=str(views), gflops=flops.paper / 1e9, gflops_total=flops.total / 1e9,
        ms_per_view=1e3 * stats.seconds / max(stats.views, 1), broken=len(stats.broken),
        broken_videos=stats.broken, **placement.to_dict(),
    )


def _names(annotations: Annotations) -> Callable[[int], str]:
    """Video id (annotation row) -> its path, for messages."""
    records = records_of(annotations)
    return lambda i: str(records[i].path)


def subset_indices(n: int, fraction: float) -> list[int]:
    """A deterministic, evenly spread subset of ``n`` videos (at least 1); ``fraction`` of them,
    a number in (0, 1]."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ConfigError(f"subset fraction must be a number, got {show(fraction)}")
    in_range(fraction, "subset", hi=1, above=0, what="Token Optimization")
    k = max(1, min(n, round(n * fraction)))
    return sorted({int(i * n / k) for i in range(k)})


class UnionFrames(torch.utils.data.Dataset):
    """Item i: video i decoded once for several grids: ``(index, label, frames (U, H, W, 3),
    {T: positions (clips, T) into frames})``, U the union of every frame count's test-view
    frames (what :class:`VideoViewDataset` would read for each grid separately)."""

    def __init__(self, annotations: Annotations, frame_counts: Sequence[int], num_clips: int,
                 indices: Sequence[int] | None = None, reader=None, sampler: SegmentSampler | None = None) -> None:
        self.records = records_of(annotations)
        self.rows = list(indices) if indices is not None else list(range(len(self.records)))
        self.frame_counts, self.num_clips = sorted(set(frame_counts)), num_clips
        self.reader = reader if reader is not None else PyAVReader()
        self.sampler = sampler if sampler is not None else SegmentSampler()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = self.rows[i]
        record = self.records[row]
        n = self.reader.num_frames(record.path)
        wanted = {t: self.sampler.views(n, t, self.num_clips) for t in self.frame_counts}  # (clips, T) each
        union = sorted({int(f) for idx in wanted.values() for f in idx.flatten().tolist()})
        where = {f: k for k, f in enumerate(union)}
        positions = {t: idx.apply_(lambda f: where[f]) for t, idx in wanted.items()}
        return row, record.label, self.reader.read(record.path, union), positions


def token_optimization_scorer(
    model, annotations: Annotations, views: Views = Views(), subset: float = 0.3, workers: int = 0,
    progress: bool = False, placement: Placement = Placement(), selector: str = "group_dynamic",
    batch_size: int = 8,
) -> ScoreManyFn:
    """``score_many(grids, on_subset)``: each video's outcome at every grid of ``grids`` (a
    :class:`Score` each), on an even subset or the whole split, decoding each video once for all
    of them: the frames every grid's views need are read together, then each grid takes its own
    frames and resizes them (the same pixels and logits as evaluating grid by grid).
    ``batch_size`` videos (all their views) go through the model per grid and forward: at small
    budgets a forward of one video is mostly fixed overhead."""
    picked = subset_indices(len(annotations), subset)
    check_labels(model, annotations)
    check_loading(batch_size, workers)
    name = _names(annotations)
    pre = preprocessing_of(model)
    transform = pre.transform(views.crops)
    device = placement.device

    def score_many(grids: Sequence[Grid], on_subset: bool) -> dict[Grid, Score]:
        for g in grids:
            g.check_size(model.patch_size)
            g.num_tokens(model.patch_size)  # checks the patch size and the budget, before any decoding
        job = distributed.current()  # under torchrun: this rank's share of the videos, then everyone's
        rows = distributed.shard(picked if on_subset else list(range(len(annotations))), job)
        data = UnionFrames(annotations, [g.frames for g in grids], views.clips, rows, sampler=pre.sampler())
        loader = DataLoader(SkipBroken(data), batch_size=None, num_workers=workers)
        accumulators = {g: ViewAccumulator(model.num_classes) for g in grids}
        model.to(device).eval()
        if progress:
            from tqdm import tqdm

            loader = tqdm(loader, desc=f"search {len(grids)} grids", unit="video", leave=False)
        def run(items) -> None:  # every grid over a batch of decoded videos
            for g in grids:
                # each video's views at this grid: (clips x crops, 3, T, R, R)
                per_video = [torch.cat([transform(clip, g.height) for clip in frames[positions[g.frames]]])
                             for _, _, frames, positions in items]
                video = torch.cat(per_video).to(device)
                ids = [row for (row, _, _, _), v in zip(items, per_video) for _ in range(len(v))]
                labels = torch.tensor([label for (_, label, _, _), v in zip(items, per_video) for _ in range(len(v))])
                with placement.autocast():
                    logits = model(video, num_tokens=g.budget, selector=selector).float().cpu()
                check_finite(logits, model, lambda i, ids=ids: name(ids[i]))
                accumulators[g].add(logits, labels, ids)

        with torch.no_grad():
            pending = []
            for item in loader:
                if isinstance(item, BrokenClip):
                    continue  # skipped here as in every grid's own evaluation
                pending.append(item)
                if len(pending) == batch_size:
                    run(pending)
                    pending = []
            if pending:
                run(pending)
        outcomes = {g: acc.result(per_video=True)["per_video"] for g, acc in accumulators.items()}
        merged = {g: {} for g in grids}
        for part in distributed.gather_objects(outcomes, job):
            for g in grids:
                merged[g].update(part[g])
        return {g: Score(merged[g]) for g in grids}

    return score_many
