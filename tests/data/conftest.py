"""Helpers for the data tests: small videos whose frames say which frame they are.

Frame i is a flat colour: red = (i % 32) * 8 + 4, green = (i // 32) * 16 + 8 (blue 128), so a
decoded frame's index is recovered by rounding channel means; H.264 at crf 23 keeps flat frames
within a couple of grey levels, far inside the 4-level margin.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from fluxvit.data.encode import write_video


def coded_frames(n: int, height: int = 48, width: int = 64) -> np.ndarray:
    """(n, H, W, 3) uint8, frame i coded as described in the module docstring (n <= 512)."""
    i = np.arange(n)
    out = np.empty((n, height, width, 3), np.uint8)
    out[..., 0] = ((i % 32) * 8 + 4)[:, None, None]
    out[..., 1] = ((i // 32) * 16 + 8)[:, None, None]
    out[..., 2] = 128
    return out


def frame_ids(frames: torch.Tensor) -> list[int]:
    """Decode the indices of uint8 (T, H, W, 3) coded frames."""
    m = frames.float().mean(dim=(1, 2))  # (T, 3)
    red = ((m[:, 0] - 4) / 8).round().long()
    green = ((m[:, 1] - 8) / 16).round().long()
    return (green * 32 + red).tolist()


def write_vfr(path: Path, times_ms: list[int], height: int = 48, width: int = 64) -> Path:
    """A variable-frame-rate H.264 mp4: coded frame i shown at ``times_ms[i]`` milliseconds."""
    frames = coded_frames(len(times_ms), height, width)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.time_base = Fraction(1, 1000)
        s.codec_context.time_base = Fraction(1, 1000)
        for t, f in zip(times_ms, frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = t, Fraction(1, 1000)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """``make_video(name, n=48, gop=None, **write_video_kwargs)`` -> path of a coded video."""

    def make(name: str, n: int = 48, gop: int | None = None, height: int = 48, width: int = 64, **kw) -> Path:
        return write_video(tmp_path / name, coded_frames(n, height, width), gop=gop, **kw)

    return make


@pytest.fixture
def broken_files(tmp_path: Path, make_video) -> dict[str, Path]:
    """Missing, empty, random bytes, text, truncated (index at the end and at the front)."""
    d = tmp_path / "broken"
    d.mkdir()
    good = make_video("good_for_truncation.mp4", n=60, gop=10)
    data = good.read_bytes()
    files = {"missing": d / "missing.mp4"}
    (files.setdefault("empty", d / "empty.mp4")).write_bytes(b"")
    (files.setdefault("random", d / "random.mp4")).write_bytes(torch.randint(256, (4000,), dtype=torch.uint8,
                                                                            generator=torch.Generator().manual_seed(1))
                                                               .numpy().tobytes())
    (files.setdefault("text", d / "text.mp4")).write_text("not a video\n" * 50)
    (files.setdefault("truncated", d / "truncated.mp4")).write_bytes(data[: len(data) // 2])
    # the same clip with its index (moov) at the front, then cut: opens fine, frames are missing
    front = d / "faststart_full.mp4"
    with av.open(str(good)) as src, av.open(str(front), "w", options={"movflags": "faststart"}) as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    cut = front.read_bytes()
    (files.setdefault("truncated_front_index", d / "truncated_front.mp4")).write_bytes(cut[: len(cut) * 2 // 3])
    return files
