"""Long videos and live streams, window by window: the window plan and a sequential window decoder.

A long video is cut into windows of ``window`` seconds, one starting every ``stride`` seconds
(``stride > window`` leaves gaps), and each window is sampled like a short video: its ``T`` frames
(for each of ``clips`` test views) sit where :func:`~fluxvit.data.sampling.segment_views` would put
them in a video of the window's span, taken in time rather than in frame numbers (the frame shown
at that instant), so variable frame rates and live streams are sampled alike.

* :func:`plan_windows` (pure): ``(duration, window, stride) -> [(start, end), ...]``. Windows start
  at 0, stride, 2 stride, ... and every full window inside the video is kept. **The last, partial
  window**: if the video's end is not reached, the next window, cut at the end, is kept when it
  holds at least half a window (:data:`MIN_TAIL`); a shorter rest is added to the window before it
  (which then ends at the video's end, up to 1.5 windows long). So the timeline always ends at the
  video's end, except when that rest falls in a gap between windows (``stride > window``): then
  it is dropped like every gap.
* :func:`iter_windows`: one sequential pass over the video or stream. Every frame is decoded
  once, in order (no seek per window); only the frames some open window samples are converted to
  RGB, scaled by FFmpeg straight to the model's short side, and a window's frames are let go once
  it is yielded. Memory is bounded by the windows open at once (about window / stride of them),
  whatever the video's length (a file's packet index, 8 bytes a frame, is read first for its
  duration). Decoding runs in a background thread: it overlaps the model, and a live read that
  blocks (a pipe, a stalled camera) never blocks the consumer, whom ``stop`` releases at once.

Live sources (``live=True``: rtsp://, http://, a device, a pipe, or a file read as a stream) have
no end known in advance: windows are yielded as they complete, and the window the stream ends (or
is stopped) in is not reported. Damaged packets cost their frames, as in
:class:`~fluxvit.data.video.PyAVReader` (the frame shown before them stands in); a file whose
frames stop well before its duration, and a stream that breaks off, end in a
:class:`~fluxvit.errors.VideoError` after the windows already yielded.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fluxvit import limits
from fluxvit.data.sampling import DEFAULT_VIEW_OFFSETS, check_view_offsets, segment_positions
from fluxvit.data.transforms import short_side_size
from fluxvit.data.video import (
    DECODER_ERRORS,
    PyAVReader,
    decoded_frames,
    rotate_frame,
    video_error_reason,
    video_stream,
)
from fluxvit.errors import ConfigError, FluxViTError, VideoError
from fluxvit.typecheck import show

log = logging.getLogger(__name__)

MIN_TAIL = 0.5  # a partial last window is kept if it holds at least this share of a window
OPEN_TIMEOUT_S = 10.0  # seconds a source may take to open (connect, first packets) before it is unreachable
READ_TIMEOUT_S = 30.0  # seconds a network source may send nothing before it counts as broken off
_OPEN_GRACE_S = 1.0  # past the open timeout, before a source that has not opened is given up on
_EPS = 1e-6  # seconds: instants closer than this are one (float rounding of pts x time base)
_FALLBACK_FPS = 25.0  # the frame interval assumed for a stream that states no frame rate


@dataclass(frozen=True)
class Window:
    """One window: ``start``/``end`` in seconds from the first frame, and ``frames`` uint8
    (clips * T, H, W, 3), view k's T frames in rows k*T .. (k+1)*T - 1 ((T, H, W, 3) for one view)."""

    start: float
    end: float
    frames: torch.Tensor


def check_window(window: float, stride: float) -> None:
    """``window`` and ``stride``: finite numbers of seconds, more than 0, at most
    :data:`~fluxvit.limits.WINDOW_SECONDS`; :class:`ConfigError` otherwise. Either may be the
    longer (a stride longer than the window leaves gaps)."""
    for name, value in (("window", window), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number of seconds, got {show(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number of seconds, got {show(value)}")
        if not value > 0:
            raise ConfigError(f"{name} must be more than 0 seconds, got {value:g}")
        limits.WINDOW_SECONDS.check(float(value), f"{name} {value:g} s")


def plan_windows(duration: float, window: float, stride: float) -> list[tuple[float, float]]:
    """The windows ``(start, end)`` in seconds of a video of ``duration`` seconds (see the module
    docstring for the last, partial window). A window longer than the video is a
    :class:`VideoError` (the caller names the video); more windows than
    :data:`~fluxvit.limits.WINDOWS` a :class:`ConfigError`."""
    check_window(window, stride)
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration) \
            or duration < 0:
        raise ConfigError(f"a video's duration must be a finite number of seconds, got {show(duration)}")
    duration = round(float(duration), 6)  # to the microsecond: 19.9 * 200 / 199 s is 20.000000000000004
    if window > duration + _EPS:
        raise VideoError(f"the window ({window:g} s) is longer than the video ({duration:.2f} s)")
    subject = f"a {duration:.2f} s video in windows every {stride:g} s"
    count = max(duration - window, 0.0) / stride + 1.0
    if not math.isfinite(count):
        limits.WINDOWS.check(count, subject)
    full = math.floor(count + _EPS)
    limits.WINDOWS.check(full, subject)
    plan = [(k * stride, k * stride + window) for k in range(full)]
    last_start, last_end = plan[-1]
    start = full * stride  # of the next window, which would run past the end
    if duration - last_end > _EPS:
        if start < duration - _EPS and duration - start >= MIN_TAIL * window - _EPS:
            limits.WINDOWS.check(full + 1, subject)
            plan.append((start, duration))
        elif start <= last_end + _EPS:  # no gap before the rest: the last window takes it
            plan[-1] = (last_start, duration)
    return plan


def window_times(start: float, end: float, frames: int, clips: int = 1,
                 offsets: str = DEFAULT_VIEW_OFFSETS) -> torch.Tensor:
    """(clips, frames) float64: the instants (seconds) window [start, end) samples, where
    :func:`~fluxvit.data.sampling.segment_views` samples a video of that span (clips at
    ``offsets`` of each segment)."""
    return start + segment_positions(end - start, frames, clips, offsets)


def iter_windows(
    source: str | os.PathLike, window: float, stride: float, frames: int, clips: int = 1, size: int | None = None,
    *, live: bool = False, format: str | None = None, threads: int = 1, open_timeout: float = OPEN_TIMEOUT_S,
    read_timeout: float = READ_TIMEOUT_S, stop: threading.Event | None = None, prefetch: int = 2,
    offsets: str = DEFAULT_VIEW_OFFSETS,
) -> Iterator[Window]:
    """The windows of ``source`` in order, each a :class:`Window` of ``clips * frames`` frames,
    decoded in one sequential pass (module docstring).

    ``source``: a video file (its duration planned with :func:`plan_windows`), or with ``live``
    anything FFmpeg opens (a URL, a device with its input ``format`` such as ``v4l2``, a pipe, a
    file), windowed until it ends. ``size``: frames are scaled so their short side is ``size``
    (the model's resolution) by FFmpeg's scaler as they are decoded, which bounds the memory the
    open windows hold (the model's own resize filter then only crops), else kept whole.
    ``offsets``: where each window's clips sit in its segments (as a model was trained:
    :data:`~fluxvit.data.sampling.VIEW_OFFSETS`). ``threads``: FFmpeg decoder threads. Opening may
    take ``open_timeout`` seconds, a network source may go ``read_timeout`` seconds without data;
    past either it is a :class:`VideoError`. ``stop``: once set, the iterator ends (what was
    decoded but not yet yielded is dropped). ``prefetch``: windows decoded ahead.

    The values, and for a file its duration and the memory its windows need, are checked here,
    before anything is decoded: a bad value is a :class:`ConfigError`, an unreadable file or a
    window longer than the video a :class:`VideoError` naming the file."""
    check_window(window, stride)
    check_view_offsets(offsets)
    for key, value, lo in (("frames", frames, 1), ("clips", clips, 1), ("size", size, 1), ("threads", threads, 0),
                           ("prefetch", prefetch, 1)):
        if value is None and key == "size":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ConfigError(f"windows: {key} must be an integer of at least {lo}, got {show(value)}")
    for key, value in (("open timeout", open_timeout), ("read timeout", read_timeout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"windows: the {key} must be a positive number of seconds, got {show(value)}")
    if live:
        name, duration, plan, planned, last = os.fspath(source), None, _endless(window, stride), None, None
        # a file's plan is capped as a whole; a stream's windows open at once are (1 px frames or not)
        limits.WINDOWS.check(_open_at_once(window, stride),
                             f"{name}: {window:g} s windows every {stride:g} s (open at once)")
    else:
        path = Path(source)
        info = PyAVReader(threads=threads).probe(path)  # checks the file first (check_file), naming it
        name, duration = str(path), info.duration
        try:
            windows = plan_windows(duration, window, stride)
        except VideoError as e:
            raise VideoError(f"{path}: {e}") from None
        planned = len(windows)
        # the last frame's time: the duration holds one mean frame spacing more (PyAVReader's probe)
        last = (duration * (info.num_frames - 1) / info.num_frames, duration / info.num_frames)
        _check_memory(name, _stored_shape(info.height, info.width, size), window, stride, frames * clips, planned)
        plan = iter(windows)

    opened = threading.Event()

    def opener() -> tuple:
        source = _open(name, live, format if live else None, open_timeout, read_timeout, threads)
        opened.set()
        return source

    def decode(halt: threading.Event) -> Iterator[Window]:
        return _decode_windows(opener, plan, window, stride, frames, clips, size, name, duration, last, planned,
                               read_timeout, halt, offsets)

    # FFmpeg's own open timeout cannot end a wait in the system (a FIFO no one writes to): this one can
    late = VideoError(f"{name}: {_doing(live)} (no answer within {open_timeout:g} s)")
    return _in_background(decode, stop, prefetch, (opened, open_timeout + _OPEN_GRACE_S, late))


# ----------------------------------------------------------------------------- decoding
def _endless(window: float, stride: float) -> Iterator[tuple[float, float]]:
    """The plan of a stream of unknown length: full windows, one every ``stride`` seconds."""
    k = 0
    while True:
        yield k * stride, k * stride + window
        k += 1


def _stored_shape(height: int, width: int, size: int | None) -> tuple[int, int]:
    """(h, w) frames are kept at: the displayed size, scaled down to the short side ``size`` if
    it is larger (never up: the transform scales the crops it takes, and a 2x1024 frame is not
    kept at 28x14336)."""
    return short_side_size(height, width, size) if size and size < min(height, width) else (height, width)


def _open_at_once(window: float, stride: float) -> int:
    """How many windows are open at once: window / stride of them, rounded up, and one closing."""
    return math.ceil(window / stride - _EPS) + 1


def _check_memory(name: str, shape: tuple[int, int], window: float, stride: float, per_window: int,
                  planned: int | None) -> None:
    """A window's frames within :data:`~fluxvit.limits.CLIP_PIXELS`, and the frames all windows
    open at once hold (window / stride of them, rounded up, and one closing) within
    :data:`~fluxvit.limits.WINDOW_BUFFER_PIXELS`, before anything is decoded; a
    :class:`VideoError` (the video's frame size decides: one of many is skipped)."""
    h, w = shape
    limits.CLIP_PIXELS.check(per_window * h * w, f"{name}: a window's {per_window} frames of {w}x{h}", VideoError)
    at_once = _open_at_once(window, stride)
    if planned is not None:
        at_once = min(at_once, planned)
    limits.WINDOW_BUFFER_PIXELS.check(
        at_once * per_window * h * w,
        f"{name}: windows of {window:g} s every {stride:g} s ({at_once} open at once, {per_window} frames of "
        f"{w}x{h} each)", VideoError)  # this video's size: one of many is skipped, the others go on


def _doing(live: bool) -> str:
    return "cannot open the stream" if live else "not a readable video"


def _open(source: str, live: bool, format: str | None, open_timeout: float, read_timeout: float, threads: int):
    """(container, its first video stream), checked like :class:`~fluxvit.data.video.PyAVReader`
    checks a file (a video stream, a decoder, the header's frame size); :class:`VideoError` naming
    ``source`` otherwise, "no answer" past ``open_timeout``."""
    import av  # lazily: importing the library must not load FFmpeg

    doing = _doing(live)
    started = time.monotonic()
    try:
        container = av.open(source, mode="r", format=format, timeout=(open_timeout, read_timeout))
    except (av.FFmpegError, *DECODER_ERRORS) as exc:
        # the open timeout ends FFmpeg's wait through its interrupt callback: an ExitError, or for
        # some protocols (rtsp) whatever error the cut-off answer makes
        late = isinstance(exc, av.ExitError) or time.monotonic() - started >= open_timeout
        why = f"no answer within {open_timeout:g} s" if late else video_error_reason(exc)
        raise VideoError(f"{source}: {doing} ({why})") from exc
    return container, video_stream(container, source, threads)


class _Clock:
    """Seconds since the first frame, strictly increasing: from each frame's timestamp, and where
    timestamps are missing, repeat or run backwards (MPEG-TS segments joined end to end), one
    frame interval after the frame before (the later frames keep that shift)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.offset: float | None = None  # subtracted from a frame's own time
        self.last: float | None = None

    def __call__(self, frame) -> float:
        raw = frame.time
        if raw is None or not math.isfinite(raw):
            t = 0.0 if self.last is None else self.last + self.interval
        else:
            if self.offset is None:
                self.offset = raw
            t = raw - self.offset
            if self.last is not None and t <= self.last + _EPS:
                t = self.last + self.interval
                self.offset = raw - t
        self.last = t
        return t


def _rgb(frame, height: int, width: int) -> np.ndarray:
    """uint8 (height, width, 3): ``frame`` as displayed (rotation applied), converted and scaled
    to that size by FFmpeg in one step (a stream whose resolution changes is scaled alike)."""
    rotation = frame.rotation or 0
    turned = round(rotation / 90) % 2
    image = frame.to_ndarray(format="rgb24", width=height if turned else width, height=width if turned else height)
    return rotate_frame(image, rotation)


class _OpenWindow:
    """A window whose samples are being filled: ``times`` (n,) float64 seconds in output order."""

    __slots__ = ("start", "end", "times", "order", "slots", "filled")

    def __init__(self, start: float, end: float, times: np.ndarray) -> None:
        self.start, self.end, self.times = start, end, times
        self.order = np.argsort(times, kind="stable")
        self.slots: list[np.ndarray | None] = [None] * len(times)
        self.filled = 0

    @property
    def complete(self) -> bool:
        return self.filled == len(self.times)

    def fill_before(self, t: float, image: Callable[[], np.ndarray]) -> None:
        """Give ``image()`` (the frame shown until ``t``) to every sample before ``t``."""
        while self.filled < len(self.order) and self.times[self.order[self.filled]] < t:
            self.slots[self.order[self.filled]] = image()
            self.filled += 1

    def window(self) -> Window:
        return Window(self.start, self.end, torch.from_numpy(np.stack(self.slots)))


def _decode_windows(
    opener: Callable[[], tuple], plan: Iterator[tuple[float, float]], window: float, stride: float, frames: int,
    clips: int, size: int | None, name: str, duration: float | None, last: tuple[float, float] | None,
    planned: int | None, read_timeout: float, halt: threading.Event, offsets: str = DEFAULT_VIEW_OFFSETS,
) -> Iterator[Window]:
    """The windows of ``plan`` from the (container, stream) ``opener()`` opens, in one pass (with
    the reader's own rules: ``decoded_frames`` skips damaged packets, ``video_error_reason`` words
    FFmpeg's errors);
    for a file, ``duration`` (its windows end there), ``last``: (the time of its last frame, the
    mean frame spacing) from its index, and ``planned``, how many windows; None for a live source."""
    import av

    container, stream = opener()
    with contextlib.closing(container):
        # the guessed rate first, as PyAVReader numbers a stream without timestamps (raw H.264: its
        # average rate is FFmpeg's 25 fps default)
        rate = stream.guessed_rate or stream.average_rate
        interval = 1.0 / float(rate) if rate else 1.0 / _FALLBACK_FPS
        # a frame starting this little after a sample is taken as shown at it: timestamps are
        # rounded to the time base (Matroska's milliseconds put frame 1 of 30 fps at 34 ms)
        late = max(_EPS, float(stream.time_base or 0))
        clock = _Clock(interval)
        pending: deque[_OpenWindow] = deque()
        upcoming = next(plan, None)
        shape: tuple[int, int] | None = None
        cap = limits.FRAME_PIXELS.value()
        errors: list[BaseException] = []
        prev, prev_image, now = None, None, 0.0

        def image() -> np.ndarray:  # the previous frame in RGB, converted once however many samples take it
            nonlocal prev_image
            if prev_image is None:
                prev_image = _rgb(prev, *shape)
            return prev_image

        def opening(start: float, end: float) -> _OpenWindow:
            return _OpenWindow(start, end, window_times(start, end, frames, clips, offsets).flatten().numpy())

        try:
            for frame in decoded_frames(container, stream, errors):
                if halt.is_set():
                    return
                if frame.width * frame.height > cap:  # the header said less: refused before converting
                    limits.FRAME_PIXELS.check(frame.width * frame.height, f"{name}: frame at {now:.2f} s", VideoError)
                if shape is None:
                    turned = round((frame.rotation or 0) / 90) % 2
                    shape = _stored_shape(*((frame.width, frame.height) if turned else (frame.height, frame.width)),
                                          size)
                    _check_memory(name, shape, window, stride, frames * clips, planned)
                now = clock(frame)
                while upcoming is not None and upcoming[0] <= now + _EPS:
                    pending.append(opening(*upcoming))
                    upcoming = next(plan, None)
                if prev is not None:
                    for w in pending:
                        w.fill_before(now - late, image)
                while pending and pending[0].complete:
                    yield pending.popleft().window()
                if upcoming is None and not pending:
                    return  # the plan is done: frames after the last window (a gap) are not needed
                prev, prev_image = frame, None
        except av.ExitError as exc:  # the read timeout
            raise VideoError(f"{name}: the stream broke off (no data for {read_timeout:g} s)") from exc
        except FluxViTError:  # a cap's refusal (the first frame's size): its own line, not a broken stream
            raise
        except (av.FFmpegError, *DECODER_ERRORS) as exc:
            raise VideoError(f"{name}: the stream broke off after {now:.2f} s ({video_error_reason(exc)})") from exc
        if errors:
            log.warning("%s: damaged packets were skipped (%s); the frames before them stood in", name,
                        video_error_reason(errors[-1]))
        if prev is None:
            why = f" ({video_error_reason(errors[-1])})" if errors else ""
            raise VideoError(f"{name}: no decodable frames{why}")
        end = now + interval  # the last frame is shown for one frame interval
        if last is not None:
            last_time, spacing = last
            if now < last_time - max(2 * spacing, 0.01):  # its index holds later frames that did not decode
                raise VideoError(f"{name}: truncated or corrupt: frames decode up to {now:.2f} s of its "
                                 f"{duration:.2f} s")
            while upcoming is not None:  # a window starting after the last frame (within a frame of the end)
                pending.append(opening(*upcoming))
                upcoming = next(plan, None)
        for w in pending:
            if duration is None and w.end > end + _EPS:
                break  # a live stream ended (or was stopped) inside this window: not reported
            w.fill_before(math.inf, image)
            yield w.window()


# ----------------------------------------------------------------------------- the background thread
_DONE = object()


def _in_background(make: Callable[[threading.Event], Iterator[Window]], stop: threading.Event | None,
                   depth: int, deadline: tuple[threading.Event, float, Exception] | None = None) -> Iterator[Window]:
    """The items of ``make(halt)``, produced in a daemon thread ``depth`` ahead; its exceptions are
    raised here. Ends when they do, or at once when ``stop`` is set; closing this iterator sets
    ``halt``, which the producer checks between frames (a producer blocked in a read is left
    behind, a daemon: it never keeps the process alive). ``deadline``: (an event, seconds, an
    error): the error is raised here if the event is not set within that many seconds (the
    source did not open)."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    halt = threading.Event()

    def put(item) -> bool:
        while not halt.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        produced = None
        try:
            produced = make(halt)
            for item in produced:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, who raises it
            put(exc)
        finally:
            if produced is not None:
                produced.close()

    thread = threading.Thread(target=work, name="fluxvit-windows", daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        while stop is None or not stop.is_set():
            try:
                item = items.get(timeout=0.1)
            except queue.Empty:
                if deadline is not None and not deadline[0].is_set() and time.monotonic() - started > deadline[1]:
                    raise deadline[2] from None
                continue
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        halt.set()
        thread.join(timeout=0.2)  # a producer blocked in a live read is not waited for
