"""Hostile and odd video files, made on the fly in a test's folder.

``BROKEN``: name -> (maker, what the error must say). A maker takes a folder and returns the
path to hand to the readers; each of these must end in a :class:`~fluxvit.errors.VideoError`
whose one line names that path and the problem.

``ODD``: name -> maker returning an :class:`Odd`: files that are strange but valid (one frame,
1x1 pixels, 2x1024, 10-bit, grey, RGB codecs, a lying extension, a path with spaces and
unicode) and must decode to the frames they hold. Frames are the coded frames of the data tests
(frame i has a flat colour that says i), so decoding is checked frame by frame.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from fluxvit.data.encode import write_video
from tests.data.conftest import coded_frames, write_vfr

FRAMES = 16
HEIGHT, WIDTH = 48, 64


def clip(directory: Path, name: str = "whole.mp4", n: int = FRAMES, height: int = HEIGHT, width: int = WIDTH,
         **kw) -> Path:
    """A valid coded clip (key frame every 4 frames) at ``directory / name``."""
    return write_video(directory / name, coded_frames(n, height, width), gop=4, **kw)


def remux(src: Path, dst: Path, **options: str) -> Path:
    """Copy the video packets of ``src`` into the container ``dst`` names, without re-encoding."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options=options) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            packet.stream = stream
            out.mux(packet)
    return dst


def cut(fraction: float, container: str = "mp4", faststart: bool = False) -> Callable[[Path], Path]:
    """Maker: the first ``fraction`` of the bytes of a clip (index at the end, or at the front)."""

    def make(d: Path) -> Path:
        whole = clip(d, f"whole.{container}", n=60)  # long enough that every cut lands among frames
        if faststart:
            whole = remux(whole, d / "front.mp4", movflags="faststart")
        data = whole.read_bytes()
        out = d / f"cut_{round(fraction * 100)}.{container}"
        out.write_bytes(data[: int(len(data) * fraction)])
        return out

    return make


def _write(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        (d / name).write_bytes(data)
        return d / name

    return make


def audio_only(d: Path) -> Path:
    """A valid mp4 holding one AAC stream and no video."""
    path = d / "audio_only.mp4"
    with av.open(str(path), "w") as c:
        stream = c.add_stream("aac", rate=16000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    return path


def no_frames(d: Path) -> Path:
    """A valid Matroska file with a video stream that holds no frame."""
    path = d / "no_frames.mkv"
    with av.open(str(path), "w") as c:
        stream = c.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        c.start_encoding()  # write the header although no frame follows
    return path


def directory(d: Path) -> Path:
    (d / "a_folder.mp4").mkdir()
    return d / "a_folder.mp4"


def fifo(d: Path) -> Path:
    """A named pipe: opening it for reading would block forever."""
    os.mkfifo(d / "pipe.mp4")
    return d / "pipe.mp4"


def symlink_loop(d: Path) -> Path:
    (d / "loop_a.mp4").symlink_to(d / "loop_b.mp4")
    (d / "loop_b.mp4").symlink_to(d / "loop_a.mp4")
    return d / "loop_a.mp4"


def dangling_symlink(d: Path) -> Path:
    (d / "dangling.mp4").symlink_to(d / "gone.mp4")
    return d / "dangling.mp4"


BROKEN: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (lambda d: d / "absent.mp4", "no such video file"),
    "empty": (_write("empty.mp4", b""), "empty file (0 bytes)"),
    "random_bytes": (_write("random.mp4", np.random.default_rng(0).bytes(6000)), "not a readable video"),
    "text_renamed_mp4": (_write("notes.mp4", b"this is a text file, not a video\n" * 40), "not a readable video"),
    "truncated_10": (cut(0.1), "not a readable video"),  # the index (moov) is at the end: lost
    "truncated_50": (cut(0.5), "not a readable video"),
    "truncated_90": (cut(0.9), "not a readable video"),
    "faststart_truncated_10": (cut(0.1, faststart=True), "no decodable frames"),  # most of the index is cut
    "faststart_truncated_50": (cut(0.5, faststart=True), "truncated or corrupt"),  # index kept
    "faststart_truncated_90": (cut(0.9, faststart=True), "truncated or corrupt"),
    "mkv_truncated_10": (cut(0.1, "mkv"), "not a readable video"),
    "mkv_truncated_50": (cut(0.5, "mkv"), "truncated or corrupt"),
    "audio_only": (audio_only, "no video stream"),
    "no_frames": (no_frames, "not a readable video"),
    "directory": (directory, "not a regular file"),
    "fifo": (fifo, "not a regular file"),
    "device": (lambda d: Path("/dev/zero"), "not a regular file"),
    "symlink_loop": (symlink_loop, "symbolic link loop"),
    "dangling_symlink": (dangling_symlink, "dangling symbolic link"),
}


@dataclass(frozen=True)
class Odd:
    """A strange but valid video: its path, frame count and frame size, and whether its frames
    keep their colours (``coded``; grey video keeps only the luma)."""

    path: Path
    frames: int
    height: int
    width: int
    coded: bool = True


def _odd(name: str, n: int = 12, height: int = HEIGHT, width: int = WIDTH, coded: bool = True,
         **kw) -> Callable[[Path], Odd]:
    def make(d: Path) -> Odd:
        return Odd(clip(d, name, n, height, width, **kw), n, height, width, coded)

    return make


def mp4_named_avi(d: Path) -> Odd:
    src = clip(d, "real.mp4", 12)
    (d / "really_mp4.avi").write_bytes(src.read_bytes())
    return Odd(d / "really_mp4.avi", 12, HEIGHT, WIDTH)


def spaces_and_unicode(d: Path) -> Odd:
    folder = d / "my videos" / "été 夏"
    folder.mkdir(parents=True)
    return Odd(clip(folder, "clip ünïcødé 视频 #1.mp4", 12), 12, HEIGHT, WIDTH)


def vfr_in_matroska(d: Path) -> Odd:
    """Variable frame rate, gaps of 10 ms to 1.5 s, in Matroska (no frame count in the header:
    its declared duration must still be met by the frames present)."""
    times = [0, 10, 20, 100, 110, 300, 310, 320, 600, 2100]
    return Odd(remux(write_vfr(d / "vfr.mp4", times, HEIGHT, WIDTH), d / "vfr.mkv"), len(times), HEIGHT, WIDTH)


def symlink_to_video(d: Path) -> Odd:
    (d / "link.mp4").symlink_to(clip(d, "target.mp4", 12))
    return Odd(d / "link.mp4", 12, HEIGHT, WIDTH)


ODD: dict[str, Callable[[Path], Odd]] = {
    "one_frame": _odd("one.mp4", n=1),
    # x264 refuses odd sizes in yuv420p (chroma is subsampled 2x2): 1x1 is written as yuv444p
    "pixel_1x1": _odd("p1x1.mp4", height=1, width=1, pix_fmt="yuv444p"),
    "pixel_2x2_yuv420p": _odd("p2x2.mp4", height=2, width=2),
    "thin_2x1024": _odd("thin.mp4", height=2, width=1024),
    "tall_1024x2": _odd("tall.mp4", height=1024, width=2),
    "yuv444p": _odd("y444.mp4", pix_fmt="yuv444p"),
    "yuv420p10le": _odd("y10.mp4", pix_fmt="yuv420p10le"),
    "gray": _odd("gray.mkv", pix_fmt="gray", coded=False),
    "ffv1_rgb": _odd("ffv1.mkv", codec="ffv1", pix_fmt="bgr0"),
    "x264_rgb24": _odd("rgb.mkv", codec="libx264rgb", pix_fmt="rgb24"),
    "png_in_mov": _odd("png.mov", codec="png", pix_fmt="rgb24"),
    "mp4_named_avi": mp4_named_avi,
    "spaces_and_unicode": spaces_and_unicode,
    "symlink_to_video": symlink_to_video,
    "vfr_in_matroska": vfr_in_matroska,
}
