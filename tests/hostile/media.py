"""Hostile and odd video files, made on the fly in a test's folder.

``BROKEN``: name -> (maker, what the error must say). A maker takes a folder and returns the
path to hand to the readers; each of these must end in a :class:`~fluxvit.errors.VideoError`
whose one line names that path and the problem.

``ODD``: name -> maker returning an :class:`Odd`: files that are strange but valid (one frame,
1x1 pixels, 2x1024, 10-bit, grey, RGB codecs, a lying extension, a path with spaces and
unicode; raw H.264/HEVC streams without timestamps, MPEG-TS segments joined end to end whose
timestamps restart or whose resolution changes, a file cut mid-GOP) and must decode to the frames
they hold. Frames are the coded frames of the data tests (frame i has a flat colour that says
i), so decoding is checked frame by frame.

:func:`bomb_bytes` is a decompression bomb: ~200 KB of H.264 that decodes to four 8192x8192
frames (805 MB as RGB); encoded once per process (x264 needs ~0.9 GB for it, for a second).
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from fluxvit.data.encode import write_video
from tests.data.conftest import coded_frames, write_vfr

FRAMES = 16
HEIGHT, WIDTH = 48, 64


def damage_packets(src: Path, dst: Path, packets: range, seed: int = 0) -> Path:
    """``src`` remuxed to ``dst`` with the packets ``packets`` (demux order) overwritten by random
    bytes of the same size and timestamps: FFmpeg then reports "Invalid data found" for them."""
    rng = np.random.default_rng(seed)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for i, packet in enumerate(inp.demux(inp.streams.video[0])):
            if packet.dts is None and packet.pts is None:
                continue  # the flush packet
            if i in packets:
                noise = av.Packet(rng.bytes(packet.size))
                noise.pts, noise.dts, noise.time_base = packet.pts, packet.dts, packet.time_base
                packet = noise
            packet.stream = stream
            out.mux(packet)
    return dst


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


def encode(path: Path, frames: np.ndarray, format: str | None = None, codec: str = "libx264", gop: int = 4,
           start: int = 0, crf: int = 23, params: str = "") -> Path:
    """Encode ``frames`` (T, H, W, 3) uint8 to ``path`` in the container (or raw stream) ``format``,
    key frame every ``gop`` frames, the first frame at time ``start`` (in frames of 1/30 s);
    ``params``: more x264/x265 parameters (``bframes=0``).
    HEVC is lossless (x265 drifts flat colours by more than the coded frames' margin)."""
    with av.open(str(path), "w", format=format) as c:
        stream = c.add_stream(codec, rate=30)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 30)
        keys = f"keyint={gop}:min-keyint={gop}:scenecut=0" + (f":{params}" if params else "")
        if codec == "libx265":
            stream.options = {"preset": "ultrafast", "x265-params": f"{keys}:lossless=1:log-level=error"}
        else:
            stream.options = {"preset": "veryfast", "crf": str(crf), "x264-params": keys}
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = start + i, Fraction(1, 30)
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    return path


def joined_ts(d: Path, name: str, n: int, second: tuple[int, int] | None = None,
              restart: bool = True) -> Path:
    """Two MPEG-TS segments joined byte for byte (``cat a.ts b.ts``), ``n`` coded frames in all:
    the second one ``second`` (height, width) if given (the resolution changes), its timestamps
    starting again from 0 if ``restart`` (else going on from the first's)."""
    half = n // 2
    first = coded_frames(n)[:half]
    rest = coded_frames(n, *second)[half:] if second else coded_frames(n)[half:]
    # going on: no B-frames, whose delay would shift the first segment's times onto the second's
    params = "" if restart else "bframes=0"
    a = encode(d / f"{name}.part1.ts", first, "mpegts", params=params)
    b = encode(d / f"{name}.part2.ts", rest, "mpegts", start=0 if restart else half, params=params)
    out = d / name
    out.write_bytes(a.read_bytes() + b.read_bytes())
    a.unlink()
    b.unlink()
    return out


def drop_leading(src: Path, dst: Path, count: int, keep_keys: bool = True) -> Path:
    """Remux ``src`` into ``dst`` without its first ``count`` packets (decoding order): a file
    cut mid-GOP, which starts with frames that need a key frame it does not hold. Without
    ``keep_keys`` every key frame is dropped too (``src`` must then have no B-frames: its
    decoding times are taken from the presentation times)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for i, packet in enumerate(inp.demux(inp.streams.video[0])):
            if packet.dts is None and packet.pts is None or i < count or packet.is_keyframe and not keep_keys:
                continue
            if not keep_keys and packet.dts is None:
                packet.dts = packet.pts
            packet.stream = stream
            out.mux(packet)
    return dst


@functools.cache
def bomb_bytes(size: int = 8192, frames: int = 4) -> bytes:
    """An H.264 mp4 of ``frames`` flat ``size`` x ``size`` frames, as bytes (~200 KB for 8192)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bomb.mp4"
        with av.open(str(path), "w") as c:
            stream = c.add_stream("libx264", rate=30)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.thread_count = 1
            lean = "threads=1:rc-lookahead=0:sync-lookahead=0:ref=1:bframes=0"  # the least x264 can hold
            stream.options = {"preset": "ultrafast", "crf": "51", "x264-params": lean}
            frame = av.VideoFrame(size, size, "yuv420p")  # one frame, reused: no 800 MB RGB array
            for plane in frame.planes:
                np.frombuffer(plane, np.uint8)[:] = 128
            for i in range(frames):
                frame.pts = i
                for packet in stream.encode(frame):
                    c.mux(packet)
            for packet in stream.encode():
                c.mux(packet)
        return path.read_bytes()


def bomb(d: Path) -> Path:
    """Four 8192x8192 frames in ~200 KB: refused from the stream header, before decoding."""
    (d / "bomb.mp4").write_bytes(bomb_bytes())
    return d / "bomb.mp4"


def no_key_frames(d: Path) -> Path:
    """A Matroska file holding only P-frames: nothing in it can be decoded."""
    keyed = encode(d / "keyed.mkv", coded_frames(24), params="bframes=0")
    return drop_leading(keyed, d / "no_keys.mkv", 0, keep_keys=False)


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
    "decompression_bomb": (bomb, "67108864 pixels per frame is more than the cap"),
    "mkv_no_key_frames": (no_key_frames, "no decodable frames"),
    "h264_random_bytes": (_write("random.h264", np.random.default_rng(1).bytes(6000)), "not a readable video"),
    "path_too_long": (lambda d: d / ("v" * 300 + ".mp4"), "path too long for this system"),  # NAME_MAX is 255
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
    first: int = 0  # the coded number of frame 0 (a file cut mid-GOP starts at its first key frame)


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


def raw_stream(name: str, codec: str) -> Callable[[Path], Odd]:
    """A raw elementary stream (``.h264``, ``.hevc``): packets without timestamps."""

    def make(d: Path) -> Odd:
        fmt = {"libx264": "h264", "libx265": "hevc"}[codec]
        return Odd(encode(d / name, coded_frames(12), fmt, codec), 12, HEIGHT, WIDTH)

    return make


def ts_joined(d: Path) -> Odd:
    """Two MPEG-TS segments joined end to end: the timestamps start again from 0 midway."""
    return Odd(joined_ts(d, "joined.ts", 16), 16, HEIGHT, WIDTH)


def ts_resolution_change(d: Path) -> Odd:
    """Joined MPEG-TS segments, 64x48 then 32x32 (and timestamps restarting): every frame comes
    back at the first frame's size."""
    return Odd(joined_ts(d, "resized.ts", 16, second=(32, 32)), 16, HEIGHT, WIDTH)


def ts_resolution_change_timed(d: Path) -> Odd:
    """The resolution changes midway, the timestamps go on (so the reader seeks in it)."""
    return Odd(joined_ts(d, "resized_timed.ts", 24, second=(96, 128), restart=False), 24, HEIGHT, WIDTH)


def mkv_cut_mid_gop(d: Path) -> Odd:
    """A Matroska file whose first packets are P-frames (a recording cut mid-GOP, key frame every
    10 frames, the first 4 packets gone): frames count from its first key frame, coded frame 10."""
    src = write_video(d / "gop10.mkv", coded_frames(40), gop=10)
    return Odd(drop_leading(src, d / "cut_mid_gop.mkv", 4), 30, HEIGHT, WIDTH, first=10)


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
    "raw_h264": raw_stream("raw.h264", "libx264"),
    "raw_hevc": raw_stream("raw.hevc", "libx265"),
    "ts_joined_timestamps_restart": ts_joined,
    "ts_resolution_change": ts_resolution_change,
    "ts_resolution_change_timed": ts_resolution_change_timed,
    "mkv_cut_mid_gop": mkv_cut_mid_gop,
}
