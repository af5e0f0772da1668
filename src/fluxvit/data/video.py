"""Decoding only the frames a clip needs.

(Longer than most modules on purpose: one concept, decoding, with its parts side by side: the
file checks, the packet index, the read planner, the PyAV backend and the decoded-frame cache;
each is short, and they share the index.)

A :class:`VideoReader` turns a file and a list of frame indices into uint8 frames (T, H, W, 3).
Frame ``i`` is the i-th frame in *presentation* order, whatever the frame rate does (so variable
frame rate files are indexed by frame, not by time).

The default backend is PyAV (FFmpeg inside the wheel). Decoding a frame means decoding from the
key frame before it, so the cheapest way to read a few frames depends on how far apart the key
frames are: with dense key frames (every 30 frames) seeking to each requested frame is fast; with
x264's default (a key frame every 250 frames) a seek per frame decodes the same GOP again and again
and reading straight through is 2-3x faster. :class:`PyAVReader` reads the packet index once
(cheap: demuxing does not decode; only the first frame is decoded, for the video's size and
rotation), then plans per file: it seeks only when the key frame before the next wanted frame
lies further ahead than the cost of a seek, and otherwise decodes through.

The same index tells how many frames the file really holds: fewer readable frames than the header
promises means the file is truncated or corrupt, and that is a :class:`~fluxvit.errors.VideoError`,
not a silently shorter clip.

Hostile and strange files, one rule each:

* **One boundary.** Whatever decoding raises while ``probe``, ``num_frames`` or ``read`` runs (an
  FFmpeg error of any kind, an OS error, the ``ValueError``/``RuntimeError``/``MemoryError`` of bad
  data) leaves the reader as one :class:`~fluxvit.errors.VideoError` naming the file, which eval and
  training skip and count: one bad video never ends a run.
* **Memory has a bound.** A frame's pixels are capped (:data:`fluxvit.limits.FRAME_PIXELS`) from the
  stream header before anything is decoded, and again on every decoded frame (a header can lie);
  a read's pixels (:data:`~fluxvit.limits.CLIP_PIXELS`) before it decodes; the cached indices'
  bytes (:data:`~fluxvit.limits.INDEX_CACHE_BYTES`; frame timestamps are int64 arrays).
* **One geometry.** Every frame of a read has the size of the video's first frame: a stream whose
  resolution changes midway (concatenated broadcast segments) has its other frames resized into it.
* **Timestamps that cannot number frames** (none at all, as in raw ``.h264``/``.hevc`` streams;
  repeated or running backwards, as in MPEG-TS segments joined end to end): frames are numbered in
  the order the decoder outputs them, and read by decoding through from the start (no seeking).
* **A file that does not start with a key frame** (cut mid-GOP): the packets before its first key
  frame cannot be decoded, so its frames are counted from that key frame.

Other backends (torchcodec, decord) are imported only when chosen with :func:`make_reader`.
"""

from __future__ import annotations

import bisect
import contextlib
import importlib
import itertools
import logging
import os
import time
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch

from fluxvit import limits
from fluxvit.errors import ConfigError, FluxViTError, VideoError
from fluxvit.files import regular_file

log = logging.getLogger(__name__)

Strategy = Literal["auto", "seek", "sequential"]

# A seek costs about as much as decoding this many 360p frames (flushing the decoder, re-reading
# the index, the decoder's start-up latency); measured with bench_data.py on 2 CPU cores.
SEEK_COST_FRAMES = 4

# What decoding a hostile file can raise besides FFmpeg's own errors (av.FFmpegError and its
# subclasses, added where av is imported): OS errors, bad data met by numpy or Python, no memory.
# Each becomes one VideoError at the reader's boundary.
DECODER_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, RuntimeError, MemoryError, ArithmeticError, LookupError, TypeError, EOFError,
)


@dataclass(frozen=True)
class VideoInfo:
    """What a probe learns without decoding more than the first frame.

    ``num_frames`` counts the frames that can actually be read (from the packet index);
    ``width``/``height`` are the displayed size of the first frame (after rotation metadata is
    applied), the size of every frame :meth:`VideoReader.read` returns;
    ``keyframe_interval`` is the mean distance in frames between key frames.
    """

    path: str
    num_frames: int
    fps: float
    duration: float
    width: int
    height: int
    rotation: int
    keyframe_interval: float


class VideoReader(Protocol):
    """What datasets read videos with."""

    def probe(self, path: str | os.PathLike) -> VideoInfo:
        """Frame count, rate, duration and size of ``path`` (raises :class:`VideoError`)."""
        ...

    def num_frames(self, path: str | os.PathLike) -> int:
        """Readable frames in ``path``, as cheaply as the backend allows (raises :class:`VideoError`)."""
        ...

    def read(self, path: str | os.PathLike, indices: Sequence[int]) -> torch.Tensor:
        """Frames ``indices`` (any order, repeats allowed, clamped into the video) as uint8 (T, H, W, 3)."""
        ...


def check_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it is a non-empty regular file; :class:`VideoError` otherwise.

    Pipes and devices are refused here, before FFmpeg could block on them or read forever."""
    path = Path(path)
    try:
        is_dir = path.is_dir()
    except (OSError, ValueError):  # a path that cannot be looked up: regular_file says why
        is_dir = False
    if is_dir:
        raise VideoError(f"{path}: not a regular file (a directory)")
    return regular_file(path, "video file", VideoError)


def clamp_indices(indices: Sequence[int] | torch.Tensor, num_frames: int, path: str | os.PathLike) -> list[int]:
    """Indices clamped into [0, num_frames): a clip longer than a short video repeats its last frame."""
    if num_frames < 1:
        raise VideoError(f"{path}: no decodable frames")
    out = [min(max(int(i), 0), num_frames - 1) for i in indices]
    if not out:
        raise ConfigError("no frame indices requested")
    return out


def rotate_frame(frame: np.ndarray, rotation: int) -> np.ndarray:
    """Apply display-matrix rotation: ``rotation`` degrees counter-clockwise (multiples of 90)."""
    k = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(frame, k)) if k else frame


def fit_frame(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 resized (bilinear) to ``height`` x ``width`` if it has another size:
    the frames of a stream whose resolution changes midway, brought to the size of its first."""
    if frame.shape[0] == height and frame.shape[1] == width:
        return frame
    image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None]
    image = torch.nn.functional.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)
    return image[0].permute(1, 2, 0).contiguous().numpy()


@contextlib.contextmanager
def reader_boundary(path: str | os.PathLike, doing: str) -> Iterator[None]:
    """Turn whatever decoding ``path`` raises into one :class:`VideoError` (``PATH: DOING (reason)``);
    a :class:`~fluxvit.errors.FluxViTError` (a refusal already worded, a bad setting) passes as it is."""
    import av

    try:
        yield
    except FluxViTError:
        raise
    except (av.FFmpegError, *DECODER_ERRORS) as exc:
        raise VideoError(f"{Path(path)}: {doing} ({video_error_reason(exc)})") from exc


# ----------------------------------------------------------------------------- the PyAV backend
_NO_TIME = np.iinfo(np.int64).min  # stands for a missing timestamp (FFmpeg's AV_NOPTS_VALUE)
_INDEX_OVERHEAD = 1024  # bytes an index holds besides its arrays (its info, its cache key): an estimate


@dataclass(frozen=True, eq=False)
class _Index:
    """Where every readable frame of a file is.

    ``pts``: the sorted presentation timestamps (int64), one per frame; ``None`` when the file's
    timestamps cannot number its frames (missing, repeated or running backwards): frame i is then
    the i-th frame the decoder outputs from the start of the file, and reads decode through.
    ``keyframes``: frame indices of the key frames, ascending (int64). ``leading``: packets before
    the first key frame were left out of the count, so decoding-order numbering starts at the first
    key frame decoded."""

    pts: np.ndarray | None
    keyframes: np.ndarray
    info: VideoInfo
    leading: bool = False

    @property
    def nbytes(self) -> int:
        """Bytes held, as the index cache counts them."""
        arrays = self.keyframes.nbytes + (self.pts.nbytes if self.pts is not None else 0)
        return arrays + _INDEX_OVERHEAD + 2 * len(self.info.path)

    def frame_at(self, pts: int | None) -> int | None:
        """The frame shown at timestamp ``pts``; None for a frame the index does not hold."""
        if pts is None or self.pts is None:
            return None
        i = int(np.searchsorted(self.pts, pts))
        return i if i < len(self.pts) and self.pts[i] == pts else None


def plan_reads(
    wanted: Sequence[int], keyframes: Sequence[int], strategy: Strategy = "auto", seek_cost: int = SEEK_COST_FRAMES
) -> list[tuple[int | None, list[int]]]:
    """Group sorted distinct frame indices into runs: ``[(seek_to_keyframe or None, [frames]), ...]``.

    ``None`` means "keep decoding from where the decoder is" (the file start for the first run).
    ``"sequential"``: one run from the start; ``"seek"``: one seek per frame; ``"auto"``: seek only
    when the key frame before the next wanted frame is more than ``seek_cost`` frames beyond the
    decoder's position, because then the seek saves more decoding than it costs.
    """
    runs: list[tuple[int | None, list[int]]] = []
    position = 0  # index of the next frame the decoder will produce
    for f in wanted:
        before = bisect.bisect_right(keyframes, f)  # key frames at or before f
        k = int(keyframes[before - 1]) if before else 0
        if strategy == "sequential":
            must_seek = False
        elif strategy == "seek":
            must_seek = True
        else:
            must_seek = k - position > seek_cost
        if must_seek or not runs:
            runs.append((k if must_seek else None, [f]))
        else:
            runs[-1][1].append(f)
        position = f + 1
    return runs


def video_stream(container, source: str, threads: int):
    """The first video stream of an open PyAV ``container``, set to decode on ``threads``,
    after the checks every reader makes before decoding: there is a video stream, FFmpeg has a
    decoder for it, and the header's frame size is within :data:`~fluxvit.limits.FRAME_PIXELS`
    (a few hundred KB of flat 8192x8192 frames decode to GBs). Otherwise :class:`VideoError`
    naming ``source``, with the container closed."""
    try:
        if not container.streams.video:
            raise VideoError(f"{source}: no video stream")
        stream = container.streams.video[0]
        context = stream.codec_context
        if context is None:
            raise VideoError(f"{source}: no decodable frames (no decoder for its video codec)")
        stream.thread_count = threads
        limits.FRAME_PIXELS.check((context.width or 0) * (context.height or 0), source, VideoError)
    except BaseException:
        container.close()
        raise
    return stream


class PyAVReader:
    """PyAV (FFmpeg) reader; see the module docstring for the seek/decode-through plan.

    ``strategy``: ``"auto"`` (default), ``"seek"`` (naive: one seek per frame) or ``"sequential"``
    (decode from the start through the last wanted frame). ``threads``: FFmpeg decoder threads
    (0: FFmpeg decides; 1 suits DataLoader workers that already use every core).
    Indices of recently read files are kept (a worker re-reads the same files every epoch), the
    least recently used dropped first, up to :data:`fluxvit.limits.INDEX_CACHE_BYTES` bytes in all
    (and at most ``cache_size`` files if given).
    """

    def __init__(self, strategy: Strategy = "auto", threads: int = 1, cache_size: int | None = None) -> None:
        if strategy not in ("auto", "seek", "sequential"):
            raise ConfigError(f"unknown decode strategy {strategy!r}; use auto, seek or sequential")
        self.strategy = strategy
        self.threads = threads
        self.cache_size = cache_size
        self.cache_bytes = 0  # what the cached indices hold (their ``nbytes``)
        self._cache: OrderedDict[tuple[str, int, int], _Index] = OrderedDict()
        self._deadline: tuple[float, float] | None = None  # (time.monotonic() to stop at, the seconds given)

    def limit_time(self, seconds: float | None) -> None:
        """From now, demuxing or decoding past ``seconds`` (None: no limit) is a VideoError,
        checked at every packet and frame: how a server bounds the time one request decodes."""
        self._deadline = None if seconds is None else (time.monotonic() + seconds, seconds)

    def _check_time(self, path: Path) -> None:
        if self._deadline is not None and time.monotonic() > self._deadline[0]:
            raise VideoError(f"{path}: decoding took longer than the cap of {self._deadline[1]:g} s")

    # -- probing
    def num_frames(self, path: str | os.PathLike) -> int:
        """From the packet index (cached), without decoding more than the first frame."""
        with reader_boundary(path, "unreadable video"):
            return self._index(path).info.num_frames

    def probe(self, path: str | os.PathLike) -> VideoInfo:
        """The index's counts, and the displayed size and rotation of the first frame (the display
        matrix reaches PyAV only on decoded frames)."""
        with reader_boundary(path, "unreadable video"):
            return self._index(path).info

    def _index(self, path: str | os.PathLike) -> _Index:
        p = check_file(path)
        st = p.stat()
        key = (str(p), st.st_size, st.st_mtime_ns)  # a rewritten file is probed again
        index = self._cache.get(key)
        if index is not None:
            self._cache.move_to_end(key)
            return index
        index = self._build_index(p)
        self._remember(key, index)
        return index

    def _remember(self, key: tuple[str, int, int], index: _Index) -> None:
        """Cache ``index``, dropping the least recently used ones past the byte cap (an index larger
        than the whole cap is not kept)."""
        cap = limits.INDEX_CACHE_BYTES.value()
        if index.nbytes > cap:
            return
        self._cache[key] = index
        self.cache_bytes += index.nbytes
        while self.cache_bytes > cap or (self.cache_size is not None and len(self._cache) > self.cache_size):
            _, old = self._cache.popitem(last=False)
            self.cache_bytes -= old.nbytes

    def _open(self, path: Path):
        import av  # lazily: importing the library must not load FFmpeg

        try:
            container = av.open(str(path), mode="r")
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise VideoError(f"{path}: not a readable video ({video_error_reason(exc)})") from exc
        return container, video_stream(container, str(path), self.threads)

    def _build_index(self, path: Path) -> _Index:
        import av

        container, stream = self._open(path)
        try:
            # per packet, in decoding order: presentation time (else decoding time), decoding time
            times, dts, keys = array("q"), array("q"), array("q")  # keys: positions of key packets
            end = 0  # the latest presentation end (pts + duration) of any packet
            first = None  # the first decoded frame: the video's size and rotation
            errors: list[BaseException] = []
            try:
                for packet in container.demux(stream):
                    self._check_time(path)
                    if first is None:  # fed until a frame comes out (the last, empty packet flushes)
                        first = next(iter(_decode_packet(stream, packet, errors)), None)
                        if first is not None:
                            limits.FRAME_PIXELS.check(first.width * first.height, f"{path}: frame 0", VideoError)
                    # size 0: the demuxer's end-of-stream marker; discard: outside the edit list
                    if packet.size == 0 or packet.is_discard:
                        continue
                    t = packet.pts if packet.pts is not None else packet.dts
                    if packet.is_keyframe:
                        keys.append(len(times))
                    times.append(_NO_TIME if t is None else t)
                    dts.append(_NO_TIME if packet.dts is None else packet.dts)
                    if t is not None:
                        end = max(end, t + (packet.duration or 0))
            except av.FFmpegError as exc:
                raise VideoError(f"{path}: truncated or corrupt after {len(times)} frames "
                                 f"({video_error_reason(exc)})") from exc
            promised = stream.frames
            if promised and len(times) < promised:
                were = "is" if len(times) == 1 else "are"
                raise VideoError(
                    f"{path}: truncated or corrupt: the header promises {promised} frames, "
                    f"only {len(times)} {were} present"
                )
            if not times or first is None:
                why = f" ({video_error_reason(errors[-1])})" if errors and times else ""
                raise VideoError(f"{path}: no decodable frames{why}")
            # the packets before the first key frame cannot be decoded (a file cut mid-GOP)
            start = keys[0] if keys else 0
            t = np.frombuffer(times, np.int64)[start:]
            d = np.frombuffer(dts, np.int64)[start:]
            # no packet flagged as a key frame: count from the first
            key_packets = np.frombuffer(keys, np.int64) - start if keys else np.zeros(1, np.int64)
            shown = np.sort(t)
            d = d[d != _NO_TIME]
            by_decoding_order = bool((t == _NO_TIME).any() or (np.diff(shown) == 0).any() or (np.diff(d) < 0).any())
            if by_decoding_order:
                pts = None
                keyframes = key_packets.copy()
                n = len(t)
                rate = stream.guessed_rate or stream.average_rate
                fps = float(rate) if rate else 0.0
                duration = n / fps if fps else 0.0
                log.debug("%s: timestamps missing, repeated or running backwards: frames numbered as decoded", path)
            else:
                # frames shown before the first key frame (an open GOP's leading frames) need
                # frames that are not in the file
                pts = shown[shown >= t[0]].copy()
                n = len(pts)
                keyframes = np.unique(np.searchsorted(pts, t[key_packets]))
                tb = float(stream.time_base) if stream.time_base else 0.0
                span = (int(pts[-1]) - int(pts[0])) * tb
                if not promised:  # no frame count in the header (Matroska, WebM): check the declared duration
                    _check_declared_end(path, stream, max(end, int(pts[-1])) * tb, span / max(n - 1, 1))
                # mean frame spacing x frames: the last frame lasts as long as an average one
                duration = span * n / (n - 1) if n > 1 and span > 0 else 0.0
                rate = stream.average_rate or stream.guessed_rate
                fps = float(rate) if rate else (n / duration if duration else 0.0)
                if not duration and fps:
                    duration = n / fps
            rotation = int(first.rotation or 0)
            w, h = (first.height, first.width) if round(rotation / 90) % 2 else (first.width, first.height)
            info = VideoInfo(
                path=str(path),
                num_frames=n,
                fps=fps,
                duration=duration,
                width=w,
                height=h,
                rotation=rotation,
                keyframe_interval=n / len(keyframes),
            )
            return _Index(pts, keyframes.astype(np.int64), info, leading=by_decoding_order and start > 0)
        finally:
            container.close()

    # -- decoding
    def read(self, path: str | os.PathLike, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """uint8 (T, H, W, 3) for ``indices`` (clamped into the video; repeats allowed), every frame
        the size of the video's first frame."""
        with reader_boundary(path, "corrupt data while decoding"):
            return self._read(Path(path), indices)

    def _read(self, path: Path, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        index = self._index(path)
        info = index.info
        clamped = clamp_indices(indices, info.num_frames, path)
        limits.CLIP_PIXELS.check(len(clamped) * info.width * info.height, str(path), VideoError)
        slots: dict[int, list[int]] = {}  # frame -> its places in the output
        for k, f in enumerate(clamped):
            slots.setdefault(f, []).append(k)
        out = np.empty((len(clamped), info.height, info.width, 3), np.uint8)
        cap = limits.FRAME_PIXELS.value()
        errors: list[BaseException] = []
        with contextlib.closing(self._decode(path, index, sorted(slots), errors)) as decoded:
            for i, frame in decoded:
                if frame.width * frame.height > cap:  # the header said less: refuse before converting it
                    limits.FRAME_PIXELS.check(frame.width * frame.height, f"{path}: frame {i}", VideoError)
                image = rotate_frame(frame.to_ndarray(format="rgb24"), frame.rotation or 0)
                if image.shape[:2] != (info.height, info.width):
                    log.debug("%s: frame %d is %dx%d, resized to the first frame's %dx%d", path, i, image.shape[1],
                              image.shape[0], info.width, info.height)
                out[slots.pop(i)] = fit_frame(image, info.height, info.width)
        if slots:
            why = f" ({video_error_reason(errors[-1])})" if errors else ""
            raise VideoError(
                f"{path}: truncated or corrupt: frame {min(slots)} of {info.num_frames} could not be decoded{why}"
            )
        return torch.from_numpy(out)

    def _decode(self, path: Path, index: _Index, wanted: list[int], errors: list[BaseException]):
        """Yield ``(i, frame)`` for each frame ``i`` of ``wanted`` (sorted, distinct) that decodes,
        following the read plan; a frame the decoder rejects is not yielded (its error goes to
        ``errors``). If a seek lands past its target (imprecise container indices), decoding
        restarts once from the start of the file for the frames still missing, without seeking."""
        if index.pts is None:  # frames numbered as decoded: only a decoder started at the file start knows them
            runs: list[tuple[int | None, list[int]]] = [(None, wanted)]
        else:
            runs = plan_reads(wanted, index.keyframes, self.strategy)
        got: set[int] = set()
        container, stream = self._open(path)
        try:
            for attempt in (0, 1):
                overshot = False
                frames = None  # numbered decoder output, from the last seek (or the file start)
                pending = None  # a frame decoded past the previous run's last: the next run's first look
                for seek_to, run in runs:
                    check_landing = False
                    if frames is None or seek_to is not None:
                        if seek_to is not None:
                            container.seek(int(index.pts[seek_to]), stream=stream, backward=True, any_frame=False)
                            check_landing = attempt == 0
                        frames = _numbered(decoded_frames(container, stream, errors), index)
                        pending = None
                    todo, last = set(run), run[-1]
                    source = frames if pending is None else itertools.chain([pending], frames)
                    pending = None
                    for i, frame in source:
                        self._check_time(path)
                        if check_landing:
                            check_landing = False
                            if i > run[0]:
                                overshot = True
                                break
                        if i in todo:
                            todo.discard(i)
                            got.add(i)
                            yield i, frame
                        if i >= last:
                            pending = (i, frame) if i > last else None
                            break
                    if overshot:
                        break
                if not overshot:
                    return
                remaining = [f for f in wanted if f not in got]
                log.debug("%s: a seek landed past frame %d; decoding from the start", path, remaining[0])
                container.close()
                container = None
                container, stream = self._open(path)
                runs = [(None, remaining)]
        finally:
            if container is not None:
                container.close()


def _decode_packet(stream, packet, errors: list[BaseException]) -> list:
    """The frames that decoding ``packet`` outputs; none if the decoder rejects it (the error is
    appended to ``errors``: a damaged packet costs its frame, not the video)."""
    import av

    try:
        return stream.codec_context.decode(packet)
    except av.FFmpegError as exc:
        errors.append(exc)
        del errors[:-1]  # the last one is enough to say why
        return []


def decoded_frames(container, stream, errors: list[BaseException]) -> Iterator:
    """Every frame the decoder outputs from where the container is (damaged packets skipped)."""
    for packet in container.demux(stream):
        yield from _decode_packet(stream, packet, errors)


def _numbered(frames: Iterator, index: _Index) -> Iterator[tuple[int, object]]:
    """``(frame index, frame)`` for each decoded frame the index holds: by timestamp, or in the
    order decoded (from the first key frame when the index counts from there)."""
    if index.pts is not None:
        for frame in frames:
            i = index.frame_at(frame.pts)
            if i is not None:  # not addressable (e.g. an open-GOP leading frame): skipped
                yield i, frame
        return
    k = 0
    started = not index.leading
    for frame in frames:
        started = started or bool(frame.key_frame)
        if started:
            yield k, frame
            k += 1


def _declared_seconds(stream) -> float | None:
    """How long the container says the video stream lasts, in seconds (None if it does not say).

    Matroska/WebM keep no frame count, but FFmpeg's muxer tags each track with its exact
    ``DURATION`` (``HH:MM:SS.fffffffff``). Durations FFmpeg only estimates (from the bit rate,
    as for MPEG-TS) are not used: a wrong estimate would refuse a good file."""
    tag = stream.metadata.get("DURATION")
    if not tag:
        return None
    try:
        h, m, sec = tag.split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        return None


def _check_declared_end(path: Path, stream, end: float, gap: float) -> None:
    """Raise if the frames present end well before the declared duration: the tail was cut off
    (a truncated download). Within two frame intervals is tolerated (rounding, a last frame of
    unknown length)."""
    declared = _declared_seconds(stream)
    if declared and declared - end > max(2 * gap, 0.01):
        raise VideoError(
            f"{path}: truncated or corrupt: the header declares {declared:.2f} s of video, "
            f"frames are present up to {end:.2f} s"
        )


def video_error_reason(exc: BaseException, limit: int = 160) -> str:
    """A short reason from an error (no file name: the caller names the file): an FFmpeg or OS
    error's own text; other errors (numpy's, Python's) also say their type."""
    lines = str(getattr(exc, "strerror", None) or exc).strip().splitlines()
    text = lines[0].split(";")[0].strip()[:limit] if lines else ""
    if isinstance(exc, OSError) or type(exc).__module__.startswith("av."):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ----------------------------------------------------------------------------- optional backends
class _OptionalReader:
    """Shared open/read logic of the optional backends: subclasses say how to open a file, count
    its frames and fetch frames, and which exceptions mean a bad file."""

    _errors: tuple[type[BaseException], ...] = (RuntimeError, ValueError)

    def _make(self, path: str):
        raise NotImplementedError

    def _count(self, handle) -> int:
        return len(handle)

    def _frames(self, handle, indices: list[int]) -> torch.Tensor:
        raise NotImplementedError

    def _open(self, path: str | os.PathLike):
        p = check_file(path)
        try:
            return p, self._make(str(p))
        except self._errors as exc:
            raise VideoError(f"{p}: not a readable video ({exc})") from exc

    def num_frames(self, path: str | os.PathLike) -> int:
        return self._count(self._open(path)[1])

    def read(self, path: str | os.PathLike, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        p, handle = self._open(path)
        clamped = clamp_indices(indices, self._count(handle), p)
        try:
            return self._frames(handle, clamped)
        except (*self._errors, IndexError) as exc:
            raise VideoError(f"{p}: corrupt data while decoding ({exc})") from exc


def _import_backend(module: str, backend: str):
    """The optional package ``module`` of video backend ``backend``; one line if it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"video backend {backend!r} is not installed (pip install {backend})") from exc


class TorchCodecReader(_OptionalReader):
    """torchcodec backend (optional; CPU builds need the system FFmpeg). Imported when constructed."""

    def __init__(self) -> None:
        self._decoder_cls = _import_backend("torchcodec.decoders", "torchcodec").VideoDecoder

    def _make(self, path: str):
        return self._decoder_cls(path, dimension_order="NHWC")

    def _frames(self, handle, indices: list[int]) -> torch.Tensor:
        return handle.get_frames_at(indices=indices).data

    def probe(self, path: str | os.PathLike) -> VideoInfo:
        p, dec = self._open(path)
        md = dec.metadata
        return VideoInfo(str(p), len(dec), float(md.average_fps or 0.0), float(md.duration_seconds or 0.0),
                         int(md.width), int(md.height), 0, float("nan"))


class DecordReader(_OptionalReader):
    """decord backend (optional; note it may return truncated files without complaint)."""

    def __init__(self) -> None:
        self._decord = _import_backend("decord", "decord")
        self._errors = (RuntimeError, self._decord.DECORDError)

    def _make(self, path: str):
        return self._decord.VideoReader(path, num_threads=1)

    def _frames(self, handle, indices: list[int]) -> torch.Tensor:
        return torch.from_numpy(handle.get_batch(indices).asnumpy())

    def probe(self, path: str | os.PathLike) -> VideoInfo:
        p, vr = self._open(path)
        n, fps = len(vr), float(vr.get_avg_fps())
        h, w = vr[0].shape[:2]
        return VideoInfo(str(p), n, fps, n / fps if fps else 0.0, int(w), int(h), 0, float("nan"))


BACKENDS = ("pyav", "torchcodec", "decord")


def make_reader(backend: str = "pyav", **kwargs) -> VideoReader:
    """A reader by name: ``"pyav"`` (default; ``kwargs`` go to :class:`PyAVReader`), ``"torchcodec"``,
    ``"decord"`` (imported only here, so an absent optional package costs nothing until chosen)."""
    if backend == "pyav":
        return PyAVReader(**kwargs)
    if backend == "torchcodec":
        return TorchCodecReader()
    if backend == "decord":
        return DecordReader()
    raise ConfigError(f"unknown video backend {backend!r}; choose one of {', '.join(BACKENDS)}")


# ----------------------------------------------------------------------------- decoded-frame cache
class CachedReader:
    """Decode each video once, whole, and serve every later read from memory.

    For datasets that fit in memory and are read many times (small benchmarks, many epochs on
    few videos): after the first epoch no frame is decoded again, which on 2 CPU cores leaves the
    cores to the model. ``max_bytes`` bounds the cache; videos met once it is full are read from
    ``reader`` each time, as without a cache (a video is read in parts within
    :data:`fluxvit.limits.CLIP_PIXELS`, and decoding stops once it outgrows the room left).
    Broken videos raise as ``reader`` does and are not cached. One cache per process (each
    DataLoader worker fills its own).
    """

    def __init__(self, reader: VideoReader | None = None, max_bytes: int = 8 * 2**30) -> None:
        self.reader = reader if reader is not None else PyAVReader()
        self.max_bytes = max_bytes
        self.cached_bytes = 0
        self._frames: dict[str, torch.Tensor] = {}
        self._too_big: set[str] = set()  # met when the cache had no room: read directly from then on

    def _whole(self, path: str | os.PathLike) -> torch.Tensor | None:
        key = os.fspath(path)
        frames = self._frames.get(key)
        if frames is None and key not in self._too_big and self.cached_bytes < self.max_bytes:
            frames = self._decode_whole(path, self.max_bytes - self.cached_bytes)
            if frames is not None and frames.numel() <= self.max_bytes - self.cached_bytes:
                self._frames[key] = frames
                self.cached_bytes += frames.numel()
            else:
                self._too_big.add(key)
        return frames

    def _decode_whole(self, path: str | os.PathLike, room: int) -> torch.Tensor | None:
        """Every frame of ``path``, read in parts of at most :data:`fluxvit.limits.CLIP_PIXELS`
        pixels (the first frame alone, to learn the size); None as soon as the parts outgrow
        ``room`` bytes before the end (the video is not decoded further)."""
        n = self.reader.num_frames(path)
        parts = [self.reader.read(path, [0])]
        size, start = parts[0].numel(), 1
        step = max(1, limits.CLIP_PIXELS.value() // max(1, parts[0][0].numel() // 3))
        while start < n:
            if size > room:
                return None
            part = self.reader.read(path, range(start, min(n, start + step)))
            parts.append(part)
            size, start = size + part.numel(), start + len(part)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def probe(self, path: str | os.PathLike) -> VideoInfo:
        return self.reader.probe(path)

    def num_frames(self, path: str | os.PathLike) -> int:
        frames = self._frames.get(os.fspath(path))
        return frames.shape[0] if frames is not None else self.reader.num_frames(path)

    def read(self, path: str | os.PathLike, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        frames = self._whole(path)
        if frames is None:
            return self.reader.read(path, indices)
        return frames[clamp_indices(indices, frames.shape[0], path)]
