"""The inference service behind ``fluxvit serve``: decoding workers, one model thread, batching.

A request is admitted by the :class:`~fluxvit.serve.scheduler.BudgetScheduler`, decoded by one of
``decode_workers`` threads at the operating point the scheduler gives it when its decoding starts
(PyAV releases the GIL while it decodes), and queued for the model thread, which runs requests of
the same grid and budget together, up to ``max_batch`` at a time, waiting at most
``batch_wait_ms`` for more while other requests are still decoding. Each request ends in a
:class:`Result` or an exception (a :class:`~fluxvit.errors.VideoError` for a video that cannot
be read) on its :class:`concurrent.futures.Future`. Nothing is kept between requests.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fluxvit.data.preprocessing import preprocessing_of
from fluxvit.errors import ConfigError, FluxViTError
from fluxvit.evaluate.runner import Views, sampling_grid
from fluxvit.flux.grid import Grid
from fluxvit.placement import Placement
from fluxvit.serve.scheduler import BudgetScheduler, OperatingPoint, Overloaded, Ticket
from fluxvit.serve.settings import ServeSettings

log = logging.getLogger(__name__)


@dataclass
class Result:
    """One classified request: the top-k, the operating point it ran at, what it waited for (ms)
    and how many requests shared its forward; ``tokens_png`` the kept-token picture if asked."""

    top: list[tuple[str, float]]
    point: OperatingPoint
    queue_ms: float
    decode_ms: float
    forward_ms: float
    batch: int
    tokens_png: bytes | None = None

    def to_dict(self) -> dict:
        return {"top": [{"label": name, "prob": round(p, 5)} for name, p in self.top],
                "grid": self.point.grid.shape, "tokens": self.point.tokens, "batch": self.batch,
                "timing_ms": {"queue": round(self.queue_ms, 2), "decode": round(self.decode_ms, 2),
                              "forward": round(self.forward_ms, 2)}}


class Cancelled(Exception):
    """The client went away before its request ran."""


@dataclass(eq=False)
class _Job:
    ticket: Ticket
    path: Path
    topk: int
    tokens_picture: bool
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    video: torch.Tensor | None = None  # (views, 3, T, R, R) once decoded
    decode_ms: float = 0.0
    queue_ms: float = 0.0
    decoded_at: float = 0.0


def candidate_points(model, max_budget: int | None) -> dict[Grid, float | None]:
    """The grids and budgets a server of ``model`` may run, with Token Optimization's top-1 where
    known: each budget's finalists it scored on its whole split, else its stored choice per budget,
    else the model's default grid at 1/8 to all of its tokens; none over ``max_budget``. The
    checkpoint's records are untrusted: a malformed one is a :class:`CheckpointError`."""
    from fluxvit.evaluate.latency import budget_ladder
    from fluxvit.evaluate.token_optimization import stored_choices, stored_scores

    meta = model.checkpoint_meta or {}
    scored: dict[Grid, float | None] = {**stored_choices(meta), **stored_scores(meta, model.patch_size)}
    if not scored:
        full = model.default_grid.num_patches(model.patch_size)
        scored = {model.default_grid.with_budget(b): None for b in budget_ladder(full, max(1, full // 8))}
    if max_budget is not None:
        smallest = min(g.budget for g in scored)
        scored = {g: top1 for g, top1 in scored.items() if g.budget <= max_budget}
        if not scored:
            raise ConfigError(f"--max-budget {max_budget}: the model serves no budget that small "
                              f"(its smallest is {smallest} tokens)")
    for grid in scored:
        grid.check_size(model.patch_size)
        grid.num_tokens(model.patch_size)
    return scored


def operating_points(model, placement: Placement, views: Views, max_budget: int | None,
                     sample_video: str | os.PathLike, repeats: int = 5) -> list[OperatingPoint]:
    """:func:`candidate_points`, each with its end-to-end cost measured on ``sample_video``
    (the scheduler keeps those worth their cost)."""
    from fluxvit.evaluate.latency import measure_end_to_end

    scored = candidate_points(model, max_budget)
    # the fastest of the repeats: what each point costs without the machine's other work, which
    # would distort one point against another; the scheduler's calibration adds the real pace
    costs = measure_end_to_end(model, sample_video, list(scored), views, placement, repeats, statistic="min")
    # Fewer tokens of one grid never cost more: timing noise (a forward of a tiny model is a few ms)
    # must not make a smaller budget look dearer than a larger one and drop it from the frontier.
    forward, cheapest = {}, {}
    for g in sorted(scored, key=lambda g: -g.budget):
        shape = g.with_budget(None)
        cheapest[shape] = min(cheapest.get(shape, math.inf), costs[g].forward_ms)
        forward[g] = cheapest[shape]
    return [OperatingPoint(g, costs[g].decode_ms + costs[g].preprocess_ms, forward[g], top1)
            for g, top1 in scored.items()]


def write_sample_video(path: str | os.PathLike, frames: int = 64, size: tuple[int, int] = (240, 320)) -> Path:
    """A moving-gradient clip like a small camera's (H x W ``size``) to measure decoding on when
    the operator gives none."""
    import numpy as np

    from fluxvit.data.encode import write_video

    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    video = np.stack([np.stack([(x + 4 * t) % 256, (y + 2 * t) % 256, (x + y + t) % 256], -1)
                      for t in range(frames)]).astype(np.uint8)
    return write_video(path, video, gop=30, reproducible=False)


class InferenceService:
    """The model, its scheduler, the decoding workers and the model thread (see the module
    docstring). ``points`` are measured here unless given (tests give their own)."""

    def __init__(self, model, placement: Placement, settings: ServeSettings,
                 points: list[OperatingPoint] | None = None) -> None:
        from fluxvit.flux.selectors import get_selector

        get_selector(settings.selector)
        self.model = model.to(placement.device).eval()
        self.placement = placement
        self.settings = settings
        self.views = Views.parse(settings.views)
        self.preprocessing = preprocessing_of(model)
        self.upload_dir = Path(tempfile.mkdtemp(prefix="fluxvit-serve-"))  # removed by close()
        try:
            if points is None:
                sample = settings.sample_video or write_sample_video(self.upload_dir / "sample.mp4")
                points = operating_points(model, placement, self.views, settings.max_budget, sample)
                if settings.sample_video is None:
                    Path(sample).unlink()
        except BaseException:
            shutil.rmtree(self.upload_dir, ignore_errors=True)
            raise
        largest = max(p.tokens for p in points)
        full_grid = sampling_grid(model, largest)  # what predict --budget LARGEST samples: a plain server's point
        full = next((p for p in points if p.grid == full_grid), None)
        self.scheduler = BudgetScheduler(points, settings.latency_ms, settings.budget_mode,
                                         settings.max_concurrent, full=full)
        cheapest = self.scheduler.cheapest
        if cheapest.cost_ms > settings.latency_ms:
            log.warning("the cheapest point (%s) takes %.0f ms end to end here, over the %g ms target: an idle "
                        "server still answers one request at a time, a busy one refuses the rest (measured on %s; "
                        "--sample-video gives a video like those served)", cheapest.grid, cheapest.cost_ms,
                        settings.latency_ms, settings.sample_video or "a 320x240 clip made at start")
        self._local = threading.local()
        self._decoders = concurrent.futures.ThreadPoolExecutor(settings.decode_workers,
                                                               thread_name_prefix="fluxvit-decode")
        self._ready: deque[_Job] = deque()
        self._decoding = 0  # jobs in a decoder now (the model thread waits for them to batch)
        self._cond = threading.Condition()
        self._closing = False
        self.on_batch = None  # called with (point, batch size) after each forward (the service's metrics)
        self._model_thread = threading.Thread(target=self._run_model, name="fluxvit-model", daemon=True)
        self._model_thread.start()
        log.info("serving %d operating points; adaptive chooses among %d (grid@tokens, end-to-end ms, top-1): %s",
                 len(points), len(self.scheduler.points), ", ".join(
                     f"{p.grid} {p.cost_ms:.0f} ms{f' {p.accuracy:.1f}%' if p.accuracy is not None else ''}"
                     for p in self.scheduler.points))

    # -- the public side
    def submit(self, ticket: Ticket, path: str | os.PathLike, topk: int = 5,
               tokens_picture: bool = False) -> concurrent.futures.Future:
        """Classify the video at ``path`` for an admitted ``ticket``; the future ends in a
        :class:`Result` or the error that stopped it."""
        job = _Job(ticket, Path(path), topk, tokens_picture)
        with self._cond:
            closing = self._closing
        try:
            if closing:
                raise RuntimeError("closing")
            self._decoders.submit(self._decode, job)
        except RuntimeError:  # closing, or the decoders already shut down by close()
            self.scheduler.finish(ticket)
            raise Overloaded("the server is shutting down", 1) from None
        return job.future

    def close(self) -> None:
        """Finish what was submitted, stop the threads, remove the upload folder."""
        self._decoders.shutdown(wait=True)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._model_thread.join()
        shutil.rmtree(self.upload_dir, ignore_errors=True)

    # -- decoding workers
    def _reader(self):
        from fluxvit.data.video import PyAVReader

        if getattr(self._local, "reader", None) is None:
            self._local.reader = PyAVReader(cache_size=0)  # nothing of one request is kept for the next
        return self._local.reader

    def _decode(self, job: _Job) -> None:
        from fluxvit.evaluate.predict import read_views

        ticket = job.ticket
        if ticket.cancelled:
            self._end(job, Cancelled("the client went away"))
            return
        with self._cond:
            self._decoding += 1
        failure: Exception | None = None
        try:
            point = self.scheduler.start(ticket)
            job.queue_ms = self.scheduler.clock() - ticket.arrived_ms
            start = time.perf_counter()
            reader = self._reader()
            reader.limit_time(self.settings.decode_timeout_s)
            try:
                job.video = read_views(job.path, point.grid, self.views, reader, self.preprocessing)
            finally:
                reader.limit_time(None)
            job.decode_ms = 1e3 * (time.perf_counter() - start)
        except Exception as e:  # a broken video (VideoError), or anything else: this request's answer
            failure = e
        with self._cond:  # one decision, under the lock: to the model thread, or ended here
            self._decoding -= 1
            queued = failure is None and not ticket.cancelled
            if queued:
                job.decoded_at = time.perf_counter()
                self._ready.append(job)
            self._cond.notify_all()
        if not queued:
            self._end(job, failure or Cancelled("the client went away"))

    def _end(self, job: _Job, outcome: Result | BaseException, measured_ms: float | None = None) -> None:
        self.scheduler.finish(job.ticket, measured_ms)
        try:
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)
        except concurrent.futures.InvalidStateError:  # cancelled by its caller: nobody is waiting for it
            pass

    # -- the model thread
    def _next_batch(self) -> list[_Job] | None:
        """The oldest ready job and those of its grid and budget (up to max_batch), after waiting
        up to batch_wait_ms for more while others decode; None once closing and drained."""
        wait_s = self.settings.batch_wait_ms / 1e3
        with self._cond:
            while not self._ready:
                if self._closing:
                    return None
                self._cond.wait()
            first = self._ready[0]
            key = first.ticket.point
            deadline = time.perf_counter() + wait_s
            while True:
                same = [j for j in self._ready if j.ticket.point == key][: self.settings.max_batch]
                left = deadline - time.perf_counter()
                if len(same) >= self.settings.max_batch or self._decoding == 0 or left <= 0:
                    break
                self._cond.wait(left)
            for j in same:
                self._ready.remove(j)
        return same

    def _run_model(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = [j for j in batch if not j.ticket.cancelled]
            for j in batch:
                if j.ticket.cancelled:
                    self._end(j, Cancelled("the client went away"))
            try:
                if live:
                    self._forward(live)
            except Exception as e:  # a bug must cost these requests, never the thread every request needs
                log.exception("the model thread failed on a batch")
                for j in live:
                    if not j.future.done():
                        self._end(j, e)

    def _forward(self, batch: list[_Job]) -> None:
        from fluxvit.evaluate.predict import classify_views

        point = batch[0].ticket.point
        budget = point.grid.num_tokens(self.model.patch_size)
        start = time.perf_counter()
        try:
            tops = classify_views(self.model, torch.cat([j.video for j in batch]), len(batch[0].video), budget,
                                  max(j.topk for j in batch), self.settings.selector, self.placement,
                                  lambda i: str(batch[i].path))
        except (FluxViTError, RuntimeError) as e:  # non-finite outputs, out of memory: these requests' answer
            if len(batch) > 1:  # each on its own, so that each error names its own video
                for j in batch:
                    self._forward([j])
                return
            self._end(batch[0], e)
            return
        forward_ms = 1e3 * (time.perf_counter() - start)
        if self.on_batch is not None:
            self.on_batch(point, len(batch))
        for j, top in zip(batch, tops):
            picture = None
            if j.tokens_picture:
                try:
                    picture = self._tokens_png(j, point)
                except (FluxViTError, RuntimeError, ValueError) as e:
                    log.warning("the kept-token picture failed: %s", e)
            waited = 1e3 * (start - j.decoded_at)
            result = Result(top[: j.topk], point, j.queue_ms + waited, j.decode_ms, forward_ms, len(batch), picture)
            self._end(j, result, measured_ms=j.decode_ms + forward_ms / len(batch))

    def _tokens_png(self, job: _Job, point: OperatingPoint) -> bytes:
        from fluxvit.evaluate.predict import token_picture
        from fluxvit.evaluate.visualize import png_bytes

        return png_bytes(token_picture(self.model, job.video[:1], point.grid, self.settings.selector, self.placement))
