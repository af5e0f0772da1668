"""The video reader against hostile inputs, round two (issue 20).

One bad video never ends a run (a resolution that changes midway, a file cut mid-GOP, any error a
decoder raises: each is decoded or refused as one :class:`VideoError` naming the file); memory has a
bound (pixel caps from the header and on each frame, an index cache bounded in bytes); valid media
with timestamps that cannot number frames (raw streams, joined MPEG-TS segments) decode frame by
frame.
"""

from __future__ import annotations

import errno
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from fluxvit import limits
from fluxvit.data.video import CachedReader, PyAVReader, VideoInfo, _Index, fit_frame, plan_reads
from fluxvit.errors import ConfigError, VideoError
from tests.data.conftest import frame_ids

from .media import ODD, bomb_bytes, clip, damage_packets, encode, joined_ts

STRATEGIES = ("auto", "seek", "sequential")


def _one_line(exc: BaseException, path: Path) -> str:
    message = str(exc)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    return message


# ----------------------------------------------------------------------------- 1. one bad video never ends a run
def test_a_resolution_change_midway_is_resized_to_the_first_frame(tmp_path):
    """64x48 then 128x96 (timestamps going on, so the reader seeks in it): numpy's "all input
    arrays must have the same shape" before; now every frame at 64x48, frame k coded k."""
    path = joined_ts(tmp_path, "resized.ts", 24, second=(96, 128), restart=False)
    reader = PyAVReader()
    info = reader.probe(path)
    assert (info.num_frames, info.height, info.width) == (24, 48, 64)
    for strategy in STRATEGIES:
        frames = PyAVReader(strategy).read(path, [23, 0, 12, 11, 17, 5])
        assert frames.shape == (6, 48, 64, 3) and frame_ids(frames) == [23, 0, 12, 11, 17, 5], strategy
        assert frames[[0, 2, 4]].float().std(dim=(1, 2)).max() < 2  # flat after resizing, not garbage


def test_joined_segments_of_two_sizes_decode_frame_by_frame(tmp_path):
    """``cat a.ts b.ts``: the size changes and the timestamps start again."""
    path = joined_ts(tmp_path, "cat.ts", 16, second=(32, 32))
    frames = PyAVReader().read(path, range(16))
    assert frames.shape == (16, 48, 64, 3) and frame_ids(frames) == list(range(16))


def test_fit_frame_resizes_only_frames_of_another_size():
    image = np.full((32, 32, 3), 77, np.uint8)
    assert fit_frame(image, 32, 32) is image
    out = fit_frame(image, 48, 64)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8 and (out == 77).all()


def test_a_file_cut_mid_gop_reads_from_its_first_key_frame(tmp_path):
    """Its first packets are P-frames: RecursionError before (the overshoot retry called itself)."""
    odd = ODD["mkv_cut_mid_gop"](tmp_path)
    assert PyAVReader().num_frames(odd.path) == 30
    for strategy in STRATEGIES:
        assert frame_ids(PyAVReader(strategy).read(odd.path, [0, 29, 5, 10])) == [10, 39, 15, 20], strategy


class _Wrapper:
    """Forwards every attribute to the wrapped PyAV object (which cannot be patched itself)."""

    def __init__(self, real):
        object.__setattr__(self, "_real", real)

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __setattr__(self, name, value):
        setattr(self._real, name, value)


def test_a_seek_that_lands_past_its_target_restarts_from_the_start_once(tmp_path, monkeypatch):
    """A container whose every seek lands at the last key frame: the reader decodes from the start
    once for the frames still missing (no loop, no recursion), and the frames are right."""
    path = clip(tmp_path, "gop4.mp4", n=40)
    reader = PyAVReader("seek")
    reader.num_frames(path)  # index cached
    opened = []
    real_open = av.open

    class Overshooting(_Wrapper):
        def seek(self, offset, *args, **kwargs):
            return self._real.seek(10**9, *args, **kwargs)  # backward from far past the end: the last key frame

    def fake_open(*args, **kwargs):
        opened.append(args[0])
        return Overshooting(real_open(*args, **kwargs))

    monkeypatch.setattr(av, "open", fake_open)
    assert frame_ids(reader.read(path, [37, 2, 21, 9])) == [37, 2, 21, 9]
    assert len(opened) == 2  # the read's container and one restart


# -- every error a decoder can raise becomes a VideoError
def _error_instances() -> list[BaseException]:
    ffmpeg = sorted({c for c in vars(av.error).values() if isinstance(c, type) and issubclass(c, av.FFmpegError)},
                    key=lambda c: c.__name__)
    others = [OSError(errno.EIO, "injected OSError"), ValueError("injected ValueError"),
              RuntimeError("injected RuntimeError"), RecursionError("injected RecursionError"),
              MemoryError("injected MemoryError"), np.exceptions.AxisError("injected AxisError"),
              ZeroDivisionError("injected ZeroDivisionError"), OverflowError("injected OverflowError"),
              IndexError("injected IndexError"), KeyError("injected KeyError"), EOFError("injected EOFError"),
              TypeError("injected TypeError")]
    return [c(errno.EIO, f"injected {c.__name__}") for c in ffmpeg] + others


class _Faulty:
    """``av.open`` wrapped so that one stage raises ``error``: ``open`` itself, ``demux`` (after two
    packets), ``decode`` (the decoder, on every packet) or ``convert`` (a frame's to_ndarray)."""

    def __init__(self, stage: str, error: BaseException | None):
        self.stage, self.error, self.real_open = stage, error, av.open

    def _raise(self):
        if self.error is None:  # a real numpy error: an allocation that cannot succeed
            np.empty(2**60, np.uint8)
        raise self.error

    def open(self, *args, **kwargs):
        if self.stage == "open":
            self._raise()
        faults = self
        container = self.real_open(*args, **kwargs)

        class Frame(_Wrapper):
            def to_ndarray(self, *a, **k):
                faults._raise()

        class Context(_Wrapper):
            def decode(self, packet=None):
                if faults.stage == "decode":
                    faults._raise()
                frames = self._real.decode(packet)
                return [Frame(f) for f in frames] if faults.stage == "convert" else frames

        class Stream(_Wrapper):
            @property
            def codec_context(self):
                return Context(self._real.codec_context)

        stream = Stream(container.streams.video[0]) if container.streams.video else None

        class Streams(_Wrapper):
            @property
            def video(self):
                return [stream] if stream is not None else []

        class Container(_Wrapper):
            streams = property(lambda self: Streams(self._real.streams))

            def demux(self, s):
                for i, packet in enumerate(self._real.demux(s._real)):
                    if faults.stage == "demux" and i == 2:
                        faults._raise()
                    yield packet

            def seek(self, offset, stream=None, **kw):
                return self._real.seek(offset, stream=stream._real, **kw)

        return Container(container)


@pytest.mark.parametrize("stage", ["open", "demux", "decode", "convert"])
def test_every_error_a_decoder_raises_becomes_one_video_error(tmp_path, monkeypatch, stage):
    """Each FFmpeg error class PyAV defines (51 in PyAV 18), OS, numpy and Python errors, raised where a
    hostile file makes FFmpeg raise: probe, num_frames and read each raise one VideoError naming
    the file and the injected reason, from a cold reader and (for read) with the index cached."""
    path = clip(tmp_path, "v.mp4", n=12)
    errors = [*_error_instances(), None]  # None: numpy's own MemoryError from a real allocation
    checked = 0
    for error in errors:
        warm = PyAVReader()
        warm.num_frames(path)  # the index built without faults
        faults = _Faulty(stage, error)
        monkeypatch.setattr(av, "open", faults.open)
        calls = {"num_frames": lambda r: r.num_frames(path), "probe": lambda r: r.probe(path),
                 "read": lambda r: r.read(path, [0, 11]), "warm read": lambda r, warm=warm: warm.read(path, [0, 11])}
        if stage == "convert":  # only a read converts frames
            calls = {k: v for k, v in calls.items() if "read" in k}
        for name, call in calls.items():
            with pytest.raises(VideoError) as info:
                call(PyAVReader())
            message = _one_line(info.value, path)
            wanted = "Unable to allocate" if error is None else f"injected {type(error).__name__}"
            assert wanted in message, (stage, name, message)
            checked += 1
        monkeypatch.setattr(av, "open", faults.real_open)
    assert checked == len(errors) * (2 if stage == "convert" else 4)


def test_damaged_packets_mid_stream_cost_their_frames_not_the_video(tmp_path):
    """Packets 8-11 of a Matroska file overwritten with random bytes (FFmpeg: "Invalid data found
    when processing input"): the frames before them read; a read that needs them is one VideoError
    saying which frame and why."""
    src = clip(tmp_path, "src.mkv", n=24)
    path = damage_packets(src, tmp_path / "damaged.mkv", range(8, 12))
    reader = PyAVReader()
    assert reader.num_frames(path) == 24
    assert frame_ids(reader.read(path, [0, 3, 7])) == [0, 3, 7]
    with pytest.raises(VideoError) as info:
        reader.read(path, range(24))
    message = _one_line(info.value, path)
    assert "truncated or corrupt: frame 8 of 24 could not be decoded (Invalid data found" in message


def test_real_ffmpeg_errors_are_video_errors(tmp_path):
    """What FFmpeg itself raises on real files: invalid data (random bytes, as mp4 and as raw
    H.264), a cut file (its index lost)."""
    random_mp4 = tmp_path / "random.mp4"
    random_mp4.write_bytes(np.random.default_rng(2).bytes(5000))
    random_h264 = tmp_path / "random.h264"
    random_h264.write_bytes(np.random.default_rng(3).bytes(5000))
    whole = clip(tmp_path, "whole.mp4", n=30)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    cases = {random_mp4: "not a readable video (Invalid data found when processing input)",
             random_h264: "not a readable video (Invalid data found when processing input)",
             cut: "not a readable video"}
    for path, reason in cases.items():
        for call in (PyAVReader().num_frames, PyAVReader().probe, lambda p: PyAVReader().read(p, [0])):
            with pytest.raises(VideoError) as info:
                call(path)
            assert reason in _one_line(info.value, path)


def test_a_bad_cap_setting_is_a_config_error_not_a_broken_video(tmp_path, monkeypatch):
    """A broken video is skipped and counted; a bad setting must stop the command instead."""
    path = clip(tmp_path, "v.mp4", n=4)
    monkeypatch.setenv("FLUXVIT_MAX_FRAME_PIXELS", "lots")
    with pytest.raises(ConfigError, match="FLUXVIT_MAX_FRAME_PIXELS='lots': must be a positive integer"):
        PyAVReader().read(path, [0])


# ----------------------------------------------------------------------------- 2. memory with a bound
@pytest.fixture(scope="session")
def bomb_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.mp4"
    path.write_bytes(bomb_bytes())
    return path


def test_a_decompression_bomb_is_refused_from_its_header(bomb_file, monkeypatch):
    """~200 KB of H.264 holding four 8192x8192 frames (805 MB of RGB): refused before decoding."""
    monkeypatch.delenv("FLUXVIT_MAX_FRAME_PIXELS", raising=False)
    assert bomb_file.stat().st_size < 300_000
    with av.open(str(bomb_file)) as c:
        assert (c.streams.video[0].codec_context.width, c.streams.video[0].frames) == (8192, 4)
    expected = (f"{bomb_file}: 67108864 pixels per frame is more than the cap of 16777216 "
                f"(raise it with FLUXVIT_MAX_FRAME_PIXELS)")
    reader = PyAVReader()
    for call in (reader.num_frames, reader.probe, lambda p: reader.read(p, [0, 1, 2, 3])):
        with pytest.raises(VideoError) as info:
            call(bomb_file)
        assert str(info.value) == expected


def test_raising_the_frame_cap_lets_a_large_video_through_and_the_clip_cap_still_holds(tmp_path, monkeypatch):
    """4160x4160 (17.3 M pixels, over the default 16.8 M): refused, read once the cap is raised; a
    clip of 8 such frames (138 M pixels) is over the clip cap (134 M) and refused before decoding."""
    for name in ("FLUXVIT_MAX_FRAME_PIXELS", "FLUXVIT_MAX_CLIP_PIXELS"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "big.mp4"
    path.write_bytes(bomb_bytes(4160, 2))
    with pytest.raises(VideoError, match="17305600 pixels per frame is more than the cap of 16777216"):
        PyAVReader().num_frames(path)
    monkeypatch.setenv("FLUXVIT_MAX_FRAME_PIXELS", str(2**25))
    reader = PyAVReader()
    assert reader.probe(path).num_frames == 2
    frames = reader.read(path, [1, 0])
    assert frames.shape == (2, 4160, 4160, 3) and abs(frames.float().mean().item() - 128) < 4
    with pytest.raises(VideoError) as info:
        reader.read(path, [0] * 8)
    assert str(info.value) == (f"{path}: 138444800 decoded pixels in one clip is more than the cap of 134217728 "
                               f"(raise it with FLUXVIT_MAX_CLIP_PIXELS)")


def test_a_header_that_lies_is_caught_on_the_frame(tmp_path, monkeypatch):
    """The frames after the first segment are 4x larger than the header and the first frame say:
    each decoded frame is checked against the cap before it is converted."""
    path = joined_ts(tmp_path, "grows.ts", 24, second=(96, 128), restart=False)
    monkeypatch.setenv("FLUXVIT_MAX_FRAME_PIXELS", str(64 * 48))
    reader = PyAVReader()
    assert reader.num_frames(path) == 24
    assert frame_ids(reader.read(path, range(12))) == list(range(12))
    with pytest.raises(VideoError) as info:
        reader.read(path, [3, 20])
    assert _one_line(info.value, path) == (f"{path}: frame 20: 12288 pixels per frame is more than the cap of "
                                           f"3072 (raise it with FLUXVIT_MAX_FRAME_PIXELS)")


def _fake_index(path: str, frames: int) -> _Index:
    info = VideoInfo(path, frames, 30.0, frames / 30, 64, 48, 0, 250.0)
    return _Index(np.arange(frames, dtype=np.int64) * 512, np.arange(0, frames, 250, dtype=np.int64), info)


def test_the_index_cache_is_bounded_in_bytes_over_many_indices(monkeypatch):
    """500 one-hour videos (108,000 frames each): an int64 timestamp array is 864 KB (the tuple of
    ints and dict of ranks of before: ~14 MB each, 7 GB for 500); the cache keeps the most recent
    that fit in 64 MiB, and never more."""
    monkeypatch.delenv("FLUXVIT_MAX_INDEX_CACHE_BYTES", raising=False)
    reader = PyAVReader()
    cap = limits.INDEX_CACHE_BYTES.value()
    assert cap == 64 * 2**20
    one = _fake_index("/videos/000.mp4", 108_000)
    assert one.pts.dtype == np.int64 and 864_000 <= one.nbytes < 880_000
    for i in range(500):
        reader._remember((f"/videos/{i:03d}.mp4", 1, 1), _fake_index(f"/videos/{i:03d}.mp4", 108_000))
        assert reader.cache_bytes <= cap
    assert reader.cache_bytes == sum(ix.nbytes for ix in reader._cache.values())
    kept = [key[0] for key in reader._cache]
    assert len(kept) == cap // one.nbytes == 77  # as many as fit
    assert kept == [f"/videos/{i:03d}.mp4" for i in range(500 - len(kept), 500)]  # the most recent
    # an index larger than the whole cap is used, never cached (and evicts nothing)
    reader._remember(("/videos/huge.mp4", 1, 1), _fake_index("/videos/huge.mp4", 9_000_000))
    assert [key[0] for key in reader._cache] == kept


def test_the_index_cache_cap_is_the_setting_and_evicts_least_recently_used(tmp_path, monkeypatch):
    """Real files, a cap of three indices: ten videos read, the three most recently used kept,
    and an evicted video is indexed again and read right."""
    paths = [clip(tmp_path, f"v{i}.mp4", n=8 + i) for i in range(10)]
    reader = PyAVReader()
    reader.num_frames(paths[9])
    size = next(iter(reader._cache.values())).nbytes
    monkeypatch.setenv("FLUXVIT_MAX_INDEX_CACHE_BYTES", str(3 * size + size // 2))
    reader = PyAVReader()
    for p in paths:
        assert reader.num_frames(p) == 8 + paths.index(p)
    reader.num_frames(paths[7])  # used again: now the most recent
    assert [Path(k[0]).name for k in reader._cache] == ["v8.mp4", "v9.mp4", "v7.mp4"]
    assert reader.cache_bytes <= 3 * size + size // 2
    assert frame_ids(reader.read(paths[0], [7, 0])) == [7, 0]
    assert [Path(k[0]).name for k in reader._cache] == ["v9.mp4", "v7.mp4", "v0.mp4"]


def test_the_cached_reader_fills_itself_within_the_clip_cap(tmp_path, monkeypatch):
    """A whole video over the clip cap: the plain reader refuses to read it at once, the
    decoded-frame cache reads it in parts under the cap and serves every frame."""
    path = clip(tmp_path, "v.mp4", n=30)
    monkeypatch.setenv("FLUXVIT_MAX_CLIP_PIXELS", str(64 * 48 * 7))
    with pytest.raises(VideoError, match="92160 decoded pixels in one clip is more than the cap of 21504"):
        PyAVReader().read(path, range(30))
    reads = []

    class Counting(PyAVReader):
        def read(self, p, indices):
            reads.append(len(indices))
            return super().read(p, indices)

    cached = CachedReader(Counting())
    assert frame_ids(cached.read(path, [29, 0, 14])) == [29, 0, 14]
    assert cached.cached_bytes == 30 * 48 * 64 * 3 and reads == [1, 7, 7, 7, 7, 1]
    assert frame_ids(cached.read(path, range(30))) == list(range(30)) and len(reads) == 6


def test_the_planner_takes_the_index_arrays():
    keyframes = np.arange(0, 300, 30, dtype=np.int64)
    wanted = [5, 40, 80, 120]
    plan = plan_reads(wanted, keyframes, "auto")
    assert plan == plan_reads(wanted, keyframes.tolist(), "auto") == [(None, [5]), (30, [40]), (60, [80]),
                                                                       (120, [120])]
    assert all(type(k) is int for k, _ in plan if k is not None)


# ----------------------------------------------------------------------------- 3. valid media refused before
GREYS = [16 + 14 * k for k in range(16)]  # frame k: flat grey 16 + 14k


def _greys(height: int = 48, width: int = 64) -> np.ndarray:
    return np.broadcast_to(np.array(GREYS, np.uint8)[:, None, None, None], (16, height, width, 3)).copy()


def _means(frames: torch.Tensor) -> list[float]:
    return frames.float().mean(dim=(1, 2, 3)).tolist()


@pytest.mark.parametrize("kind", ["raw.h264", "raw.hevc", "joined.ts"])
def test_streams_without_usable_timestamps_number_frames_in_decoding_order(tmp_path, kind):
    """Raw H.264/HEVC (no timestamps at all: "packets carry no timestamps; cannot index frames"
    before) and two MPEG-TS segments joined (timestamps restart: a RecursionError before): 16
    frames, frame k the k-th encoded (its grey level), for every strategy."""
    frames = _greys()
    if kind == "joined.ts":
        a = encode(tmp_path / "a.ts", frames[:9], "mpegts")
        b = encode(tmp_path / "b.ts", frames[9:], "mpegts")
        path = tmp_path / kind
        path.write_bytes(a.read_bytes() + b.read_bytes())
    else:
        fmt, codec = {"raw.h264": ("h264", "libx264"), "raw.hevc": ("hevc", "libx265")}[kind]
        path = encode(tmp_path / kind, frames, fmt, codec)
    with av.open(str(path)) as c:  # what made them unreadable before
        times = [p.pts for p in c.demux(c.streams.video[0]) if p.size]
    assert times.count(None) == 16 if kind != "joined.ts" else len(set(times)) < len(times)
    info = PyAVReader().probe(path)
    assert (info.num_frames, info.height, info.width) == (16, 48, 64) and info.fps == pytest.approx(30)
    wanted = [15, 0, 8, 9, 3, 3]
    for strategy in STRATEGIES:
        got = _means(PyAVReader(strategy).read(path, wanted))
        assert max(abs(g - GREYS[w]) for g, w in zip(got, wanted)) < 3, (strategy, got)
    assert max(abs(g - e) for g, e in zip(_means(PyAVReader().read(path, range(16))), GREYS)) < 3


def test_a_raw_stream_cut_mid_gop_counts_from_its_first_key_frame(tmp_path):
    """Raw H.264 whose first three packets (frames 0-2 of a 4-frame GOP; each packet repeats the
    parameter sets) are gone, so it starts with a P-frame: numbered in decoding order from the first key frame, which is
    encoded frame 4."""
    whole = encode(tmp_path / "whole.h264", _greys(), "h264", params="bframes=0:repeat-headers=1")
    with av.open(str(whole)) as c:
        packets = [(bytes(p), p.is_keyframe) for p in c.demux(c.streams.video[0]) if p.size]
    assert [key for _, key in packets] == [k % 4 == 0 for k in range(16)]
    path = tmp_path / "cut.h264"
    path.write_bytes(b"".join(data for data, _ in packets[3:]))
    reader = PyAVReader()
    assert reader.num_frames(path) == 12
    got = _means(reader.read(path, [0, 11, 5]))
    assert max(abs(g - GREYS[w + 4]) for g, w in zip(got, [0, 11, 5])) < 3, got
