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
(cheap: demuxing does not decode), then plans per file: it seeks only when the key frame before the
next wanted frame lies further ahead than the cost of a seek, and otherwise decodes through.

The same index tells how many frames the file really holds: fewer readable frames than the header
promises means the file is truncated or corrupt, and that is a :class:`~fluxvit.errors.VideoError`,
not a silently shorter clip.

Other backends (torchcodec, decord) are imported only when chosen with :func:`make_reader`.
"""

from __future__ import annotations

import bisect
import dataclasses
import errno
import importlib
import logging
import os
import stat
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch

from fluxvit.errors import ConfigError, VideoError

log = logging.getLogger(__name__)

Strategy = Literal["auto", "seek", "sequential"]

# A seek costs about as much as decoding this many 360p frames (flushing the decoder, re-reading
# the index, the decoder's start-up latency); measured with bench_data.py on 2 CPU cores.
SEEK_COST_FRAMES = 4


@dataclass(frozen=True)
class VideoInfo:
    """What a probe learns without decoding pixels.

    ``num_frames`` counts the frames that can actually be read (from the packet index);
    ``width``/``height`` are the displayed size (after rotation metadata is applied; the cheap
    index alone knows only the coded size and says rotation 0);
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
        st = path.stat()
    except ValueError:  # a NUL byte: no such path can exist
        raise VideoError(f"{str(path)!r}: not a valid path (it holds a NUL byte)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise VideoError(f"{path}: symbolic link loop") from None
        if path.is_symlink():
            raise VideoError(f"{path}: dangling symbolic link to {os.readlink(path)}") from None
        if exc.errno == errno.ENOENT:
            raise VideoError(f"{path}: no such video file") from None
        raise VideoError(f"{path}: cannot access ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise VideoError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    return path


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


# ----------------------------------------------------------------------------- the PyAV backend
@dataclass(frozen=True)
class _Index:
    """Presentation-ordered timestamps of every readable frame and the positions of key frames."""

    pts: tuple[int, ...]  # sorted presentation timestamps, one per frame
    keyframes: tuple[int, ...]  # frame indices (into pts) of key frames, ascending
    info: VideoInfo


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
        k = keyframes[bisect.bisect_right(keyframes, f) - 1] if keyframes and keyframes[0] <= f else 0
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


class PyAVReader:
    """PyAV (FFmpeg) reader; see the module docstring for the seek/decode-through plan.

    ``strategy``: ``"auto"`` (default), ``"seek"`` (naive: one seek per frame) or ``"sequential"``
    (decode from the start through the last wanted frame). ``threads``: FFmpeg decoder threads
    (0: FFmpeg decides; 1 suits DataLoader workers that already use every core).
    ``cache_size``: probed indices kept per reader (a worker re-reads the same files every epoch).
    """

    def __init__(self, strategy: Strategy = "auto", threads: int = 1, cache_size: int = 256) -> None:
        if strategy not in ("auto", "seek", "sequential"):
            raise ConfigError(f"unknown decode strategy {strategy!r}; use auto, seek or sequential")
        self.strategy = strategy
        self.threads = threads
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, int, int], _Index] = OrderedDict()

    # -- probing
    def num_frames(self, path: str | os.PathLike) -> int:
        """From the packet index (cached), without decoding."""
        return self._index(path).info.num_frames

    def probe(self, path: str | os.PathLike) -> VideoInfo:
        """The index's counts plus the displayed size and rotation, read from the first frame (the
        display matrix reaches PyAV only on decoded frames)."""
        import av

        info = self._index(path).info
        container, stream = self._open(Path(path))
        try:
            frame = next(container.decode(stream))
        except (av.FFmpegError, StopIteration) as exc:
            raise VideoError(f"{path}: no decodable frames ({_reason(exc)})") from exc
        finally:
            container.close()
        rotation = int(frame.rotation or 0)
        w, h = (frame.height, frame.width) if round(rotation / 90) % 2 else (frame.width, frame.height)
        return dataclasses.replace(info, width=w, height=h, rotation=rotation)

    def _index(self, path: str | os.PathLike) -> _Index:
        p = check_file(path)
        st = p.stat()
        key = (str(p), st.st_size, st.st_mtime_ns)  # a rewritten file is probed again
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        index = self._build_index(p)
        self._cache[key] = index
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return index

    def _open(self, path: Path):
        import av  # lazily: importing the library must not load FFmpeg

        try:
            container = av.open(str(path), mode="r")
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise VideoError(f"{path}: not a readable video ({_reason(exc)})") from exc
        if not container.streams.video:
            container.close()
            raise VideoError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_count = self.threads
        return container, stream

    def _build_index(self, path: Path) -> _Index:
        import av

        container, stream = self._open(path)
        try:
            pts: list[int] = []
            key_pts: list[int] = []
            end = 0  # the latest presentation end (pts + duration) of any packet
            try:
                for packet in container.demux(stream):
                    # size 0: the demuxer's end-of-stream marker; discard: outside the edit list
                    if packet.size == 0 or packet.is_discard:
                        continue
                    t = packet.pts if packet.pts is not None else packet.dts
                    if t is None:
                        raise VideoError(f"{path}: packets carry no timestamps; cannot index frames")
                    pts.append(t)
                    end = max(end, t + (packet.duration or 0))
                    if packet.is_keyframe:
                        key_pts.append(t)
            except av.FFmpegError as exc:
                raise VideoError(f"{path}: truncated or corrupt after {len(pts)} frames ({_reason(exc)})") from exc
            promised = stream.frames
            if promised and len(pts) < promised:
                were = "is" if len(pts) == 1 else "are"
                raise VideoError(
                    f"{path}: truncated or corrupt: the header promises {promised} frames, "
                    f"only {len(pts)} {were} present"
                )
            if not pts:
                raise VideoError(f"{path}: no decodable frames")
            pts.sort()
            rank = {t: i for i, t in enumerate(pts)}
            keyframes = sorted({rank[t] for t in key_pts}) or [0]
            tb = float(stream.time_base) if stream.time_base else 0.0
            span = (pts[-1] - pts[0]) * tb
            if not promised:  # no frame count in the header (Matroska, WebM): check the declared duration
                _check_declared_end(path, stream, max(end, pts[-1]) * tb, span / max(len(pts) - 1, 1))
            # mean frame spacing x frames: the last frame lasts as long as an average one
            duration = span * len(pts) / (len(pts) - 1) if len(pts) > 1 and span > 0 else 0.0
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else (len(pts) / duration if duration else 0.0)
            if not duration and fps:
                duration = len(pts) / fps
            info = VideoInfo(
                path=str(path),
                num_frames=len(pts),
                fps=fps,
                duration=duration,
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                rotation=0,
                keyframe_interval=len(pts) / len(keyframes),
            )
            return _Index(tuple(pts), tuple(keyframes), info)
        finally:
            container.close()

    # -- decoding
    def read(self, path: str | os.PathLike, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """uint8 (T, H, W, 3) for ``indices`` (clamped into the video; repeats allowed)."""
        import av

        index = self._index(path)
        p = Path(path)
        clamped = clamp_indices(indices, index.info.num_frames, p)
        wanted = sorted(set(clamped))
        runs = plan_reads(wanted, index.keyframes, self.strategy)
        rank = {t: i for i, t in enumerate(index.pts)}
        got: dict[int, np.ndarray] = {}
        container, stream = self._open(p)
        try:
            for seek_to, frames in runs:
                self._decode_run(container, stream, index, rank, seek_to, frames, got)
        except av.FFmpegError as exc:
            raise VideoError(f"{p}: corrupt data while decoding ({_reason(exc)})") from exc
        finally:
            container.close()
        missing = [f for f in wanted if f not in got]
        if missing:
            raise VideoError(
                f"{p}: truncated or corrupt: frame {missing[0]} of {index.info.num_frames} could not be decoded"
            )
        return torch.from_numpy(np.stack([got[f] for f in clamped]))

    def _decode_run(self, container, stream, index: _Index, rank: dict[int, int], seek_to: int | None,
                    frames: list[int], got: dict[int, np.ndarray]) -> None:
        """Decode ``frames`` (sorted) into ``got``, seeking to key frame ``seek_to`` first if given."""
        todo = set(frames)
        last = frames[-1]
        if seek_to is not None:
            container.seek(index.pts[seek_to], stream=stream, backward=True, any_frame=False)
        first = True
        for frame in container.decode(stream):
            i = rank.get(frame.pts) if frame.pts is not None else None
            if i is None:
                continue  # a frame outside the index (e.g. an open-GOP leading frame): not addressable
            if first and i > frames[0]:
                # the container's index put us past the target (imprecise seeking): restart from the
                # beginning, which is always correct, instead of returning a wrong frame
                log.debug("%s: seek overshot frame %d (landed on %d); decoding from the start", container.name,
                          frames[0], i)
                container.seek(index.pts[0], stream=stream, backward=True, any_frame=False)
                self._decode_run(container, stream, index, rank, None, frames, got)
                return
            first = False
            if i in todo:
                got[i] = rotate_frame(frame.to_ndarray(format="rgb24"), frame.rotation or 0)
                todo.discard(i)
            if i >= last and not todo:
                return


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


def _reason(exc: BaseException) -> str:
    """A short reason from an FFmpeg/OS error (no file name: the caller names the file)."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(";")[0].strip() or type(exc).__name__


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
    ``reader`` each time, as without a cache. Broken videos raise as ``reader`` does and are not
    cached. One cache per process (each DataLoader worker fills its own).
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
            frames = self.reader.read(path, range(self.reader.num_frames(path)))
            if self.cached_bytes + frames.numel() <= self.max_bytes:
                self._frames[key] = frames
                self.cached_bytes += frames.numel()
            else:
                self._too_big.add(key)
        return frames

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
