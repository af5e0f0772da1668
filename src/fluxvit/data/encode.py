"""Writing videos: uint8 frames to a real H.264 (or other) file with PyAV.

Used by the synthetic benchmark, the benchmarks and the tests (which make their own small
videos instead of storing data): :func:`write_video` for frames in memory; and by ``fluxvit
prepare``'s re-encoding: :func:`video_writer`, one frame at a time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from fluxvit.atomic import atomic_write


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float = 30.0,
    codec: str = "libx264",
    gop: int | None = None,
    crf: int = 23,
    pix_fmt: str = "yuv420p",
    reproducible: bool = True,
) -> Path:
    """Encode ``frames`` (T, H, W, 3) uint8 RGB to ``path``; returns the path.

    ``gop`` sets the key-frame spacing (None: the encoder's default, 250 for x264). H and W are
    rounded down to even sizes for yuv420p. The file is written atomically (:mod:`fluxvit.atomic`),
    so a crash never leaves a half-written video under ``path``. ``reproducible`` makes x264
    write the same bytes for the same frames every time (its SIMD code does not), at ~2.4x the
    encoding time.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if pix_fmt == "yuv420p":
        frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]
    # not durable: a clip is cheap to encode again, and an fsync per clip would slow synthesis
    with video_writer(path, frames.shape[2], frames.shape[1], fps, codec, gop, crf, pix_fmt, reproducible,
                      durable=False) as write:
        for frame in frames:
            write(frame)
    return Path(path)


@contextlib.contextmanager
def video_writer(
    path: str | os.PathLike,
    width: int,
    height: int,
    fps: float = 30.0,
    codec: str = "libx264",
    gop: int | None = None,
    crf: int = 23,
    pix_fmt: str = "yuv420p",
    reproducible: bool = True,
    durable: bool = True,
    threads: int | None = None,
    bit_rate: int | None = None,
) -> Iterator[Callable[[np.ndarray], None]]:
    """Open ``path`` for a video of ``width`` x ``height`` frames and yield ``write(frame)``, which
    encodes one uint8 (H, W, 3) RGB frame; the file appears under ``path`` complete, when the block
    ends without an error (:func:`fluxvit.atomic.atomic_write`; ``durable`` as there), and never
    otherwise. ``gop``, ``crf`` and ``reproducible`` as in :func:`write_video` (``crf`` applies to
    x264/x265; ``bit_rate``, in bits per second, to other encoders such as ``mpeg4``);
    ``threads``: encoder threads (None: the encoder's default)."""
    import av  # imported here: the library imports fast without touching FFmpeg

    path = Path(path)
    with atomic_write(path, durable=durable) as tmp, av.open(str(tmp), mode="w", format=_format_for(path)) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = width, height
        stream.pix_fmt = pix_fmt
        if threads is not None:
            stream.codec_context.thread_count = threads
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        options = {}
        x264_params = []
        if codec in ("libx264", "libx265"):
            options["crf"] = str(crf)
            options["preset"] = "veryfast"
        if codec == "libx264" and reproducible:
            # x264's SIMD code made different files from the same frames now and then
            # (measured: 3 outcomes in 60 encodes of one clip in one process, 1 with asm=0),
            # so the same seed would not give the same benchmark. Plain C: ~2.4x slower.
            x264_params.append("asm=0")
        if gop is not None:
            stream.codec_context.gop_size = gop
            if codec == "libx264":
                x264_params.append(f"keyint={gop}:min-keyint={gop}:scenecut=0")
        if x264_params:
            options["x264-params"] = ":".join(x264_params)
        stream.options = options

        def write(frame: np.ndarray) -> None:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)

        yield write
        for packet in stream.encode():
            container.mux(packet)


def _format_for(path: Path) -> str | None:
    return {".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".mp4": "mp4", ".mov": "mov"}.get(
        path.suffix.lower()
    )
