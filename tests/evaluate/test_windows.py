"""Long videos and streams window by window: the plan, the one-pass decoder (frames numbered by
their brightness, so each window's frames can be checked to come from inside it), and
``fluxvit predict --window / --stream`` (timeline, a file read as a stream, Ctrl-C, bad values)."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

import fluxvit
from fluxvit.cli import main as cli
from fluxvit.data import windows as windows_module
from fluxvit.data.encode import write_video
from fluxvit.data.sampling import segment_views
from fluxvit.data.video import PyAVReader
from fluxvit.data.windows import iter_windows, plan_windows, window_times
from fluxvit.errors import ConfigError, VideoError
from tests.hostile.media import damage_packets

FPS, SECONDS, SIZE = 10, 20, 64
FRAMES = FPS * SECONDS


def numbered(n: int, size: int = SIZE) -> np.ndarray:
    """(n, size, size, 3) grey frames: frame i is (i // 16) in its top half and (i % 16) in its
    bottom half, 16 levels apart, so compression and scaling never change the number read back."""
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        out[i, : size // 2] = (i // 16) * 16 + 8
        out[i, size // 2:] = (i % 16) * 16 + 8
    return out


def frame_numbers(frames: torch.Tensor) -> list[int]:
    """The numbers :func:`numbered` wrote, read from uint8 frames (N, H, W, 3) of any size (the
    middle of each half, away from the edge that scaling blurs)."""
    h = frames.shape[1]
    f = frames.float()
    top = f[:, h // 16: 6 * h // 16].mean((1, 2, 3))
    bottom = f[:, 10 * h // 16: 15 * h // 16].mean((1, 2, 3))
    return (((top - 8) / 16).round() * 16 + ((bottom - 8) / 16).round()).long().tolist()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """(folder, the 20 s 64x64 10 fps numbered video, a nano checkpoint with default grid 4x56)."""
    root = tmp_path_factory.mktemp("windows")
    video = write_video(root / "long.mp4", numbered(FRAMES), fps=FPS, gop=10, reproducible=False)
    torch.manual_seed(0)
    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=4, depth=2, default_grid=(4, 56))
    ckpt = fluxvit.save_checkpoint(model, root / "nano.safetensors", classes=["a", "b", "c", "d"])
    return root, video, ckpt


# ----------------------------------------------------------------------------- the plan
@pytest.mark.parametrize("duration, window, stride, expected", [
    (20, 2, 2, [(2.0 * k, 2.0 * k + 2) for k in range(10)]),  # exact fit
    (20.5, 2, 2, [(2.0 * k, 2.0 * k + 2) for k in range(9)] + [(18, 20.5)]),  # 0.5 s rest: joins the last
    (21.2, 2, 2, [(2.0 * k, 2.0 * k + 2) for k in range(10)] + [(20, 21.2)]),  # 1.2 s >= half: its own
    (10, 4, 1, [(k, k + 4) for k in range(7)]),  # overlapping: starts 0..6
    (10.3, 4, 3, [(0, 4), (3, 7), (6, 10.3)]),  # 1.3 s from 9: short, the last takes it
    (20, 2, 5, [(0, 2), (5, 7), (10, 12), (15, 17)]),  # gaps: the rest lies in one
    (21.5, 2, 5, [(0, 2), (5, 7), (10, 12), (15, 17), (20, 21.5)]),  # a tail of 1.5 s after a gap
    (20.5, 2, 5, [(0, 2), (5, 7), (10, 12), (15, 17)]),  # 0.5 s after a gap: dropped
    (3, 3, 1, [(0, 3)]),  # the window is the video
])
def test_the_plan_covers_the_video_and_counts_its_windows(duration, window, stride, expected):
    plan = plan_windows(duration, window, stride)
    assert len(plan) == len(expected)
    assert np.allclose(plan, expected)


def test_with_no_gaps_the_plan_covers_every_instant():
    for duration, window, stride in [(7.3, 1.5, 0.7), (600, 2, 2), (59.9, 8, 3), (1.0, 0.1, 0.1), (100, 10, 9.5)]:
        plan = plan_windows(duration, window, stride)
        assert plan[0][0] == 0 and plan[-1][1] == pytest.approx(duration)
        assert all(b[0] <= a[1] + 1e-9 for a, b in zip(plan, plan[1:]))  # no hole between windows
        full = math.floor((duration - window) / stride + 1e-6) + 1
        assert len(plan) in (full, full + 1)
        assert all(e - s == pytest.approx(window) for s, e in plan[:-1])
        assert 0.5 * window - 1e-9 <= plan[-1][1] - plan[-1][0] < 1.5 * window  # a tail, or the last with the rest


def test_the_plan_refuses_bad_values_in_one_line():
    with pytest.raises(VideoError, match=r"^the window \(30 s\) is longer than the video \(20.00 s\)$"):
        plan_windows(20, 30, 2)
    for bad, problem in [(0, "more than 0 seconds, got 0"), (-1, "more than 0 seconds, got -1"),
                         (math.nan, "a finite number of seconds, got nan"),
                         (math.inf, "a finite number of seconds, got inf"),
                         ("2", "a number of seconds, got '2'"), (True, "a number of seconds")]:
        for window, stride in [(bad, 1), (1, bad)]:
            name = "window" if window is bad else "stride"
            with pytest.raises(ConfigError, match=rf"^{name} must be {problem}"):
                plan_windows(20, window, stride)
    with pytest.raises(ConfigError, match="window 5000 s: 5000 seconds .* cap of 3600 .*FLUXVIT_MAX_WINDOW_SECONDS"):
        plan_windows(10_000, 5000, 1)
    with pytest.raises(ConfigError, match=r"windows per video is more than the cap .*FLUXVIT_MAX_WINDOWS"):
        plan_windows(86_400, 1, 0.001)  # 86 M windows


def test_window_instants_are_segment_views_in_time():
    for t, clips in [(4, 1), (8, 3), (7, 2)]:
        frames = (window_times(0, SECONDS, t, clips) * FPS).floor().long()
        assert torch.equal(frames, segment_views(FRAMES, t, clips))
    times = window_times(6, 8, 4)
    assert times.tolist() == [[6.25, 6.75, 7.25, 7.75]]


# ----------------------------------------------------------------------------- the decoder
def test_each_windows_frames_come_from_inside_it_decoding_the_video_once(media, monkeypatch):
    _, video, _ = media
    decoded = []
    real = windows_module.decoded_frames

    def counted(*args):
        for frame in real(*args):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(windows_module, "decoded_frames", counted)
    got = list(iter_windows(video, 2, 2, 4))
    assert [(w.start, w.end) for w in got] == [(2.0 * k, 2.0 * k + 2) for k in range(10)]
    # one pass, in order, no frame twice, up to the frame after the last sample (19.75 s: frame 198)
    assert decoded == sorted(set(decoded)) and len(decoded) == FRAMES - 1
    reader = PyAVReader()
    for w in got:
        numbers = frame_numbers(w.frames)
        assert numbers == (window_times(w.start, w.end, 4) * FPS).floor().long().flatten().tolist()
        assert all(w.start * FPS <= i < w.end * FPS for i in numbers)
        assert torch.equal(w.frames, reader.read(video, numbers))  # the reader's very pixels


def test_overlapping_windows_with_views_at_the_models_resolution(media):
    _, video, _ = media
    got = list(iter_windows(video, 3, 1, 4, clips=2, size=32))
    assert [(w.start, w.end) for w in got] == plan_windows(SECONDS, 3, 1)  # 18 windows, 17-20 last
    for w in got:
        assert w.frames.shape == (8, 32, 32, 3) and w.frames.dtype == torch.uint8
        numbers = frame_numbers(w.frames)
        assert numbers == (window_times(w.start, w.end, 4, 2) * FPS).floor().long().flatten().tolist()
        assert all(w.start * FPS <= i < w.end * FPS for i in numbers)


def test_windows_sample_their_clips_where_the_model_was_tested(media):
    """view offsets "start" (the release's SSv2): a window's two clips at 0 and 1/2 of each of its
    segments, as a whole video's; found by a red-team pass (windows ignored the offsets)."""
    _, video, _ = media
    assert torch.equal((window_times(0, SECONDS, 4, 2, "start") * FPS).floor().long(),
                       segment_views(FRAMES, 4, 2, offsets="start"))
    got = list(iter_windows(video, 4, 4, 4, clips=2, offsets="start"))
    between = list(iter_windows(video, 4, 4, 4, clips=2))
    for w, b in zip(got, between):
        numbers = frame_numbers(w.frames)
        assert numbers == (window_times(w.start, w.end, 4, 2, "start") * FPS).floor().long().flatten().tolist()
        assert numbers[0] == round(w.start * FPS) and numbers != frame_numbers(b.frames)
    with pytest.raises(ConfigError, match="view offsets 'middle'"):
        iter_windows(video, 4, 4, 4, offsets="middle")


def test_millisecond_timestamps_sample_the_frames_segment_views_does(tmp_path):
    """Matroska rounds 30 fps timestamps to milliseconds (frame 5 at 167 ms, after its 166.7):
    samples that fall on a frame's start still take that frame."""
    video = write_video(tmp_path / "thirty.mkv", numbered(90), fps=30, gop=30, reproducible=False)
    got = list(iter_windows(video, 1, 1, 4, clips=2))
    assert len(got) == 3
    for w in got:
        assert frame_numbers(w.frames) == (window_times(w.start, w.end, 4, 2) * 30 + 1e-9).floor().long().flatten(
        ).tolist()


def test_a_file_read_live_gives_its_complete_windows_and_stop_ends_it(media):
    _, video, _ = media
    as_file = list(iter_windows(video, 3, 3, 4))
    live = list(iter_windows(video, 3, 3, 4, live=True))
    assert [(w.start, w.end) for w in as_file][-1] == (18, 20)  # the 2 s tail (>= half a window) kept
    assert [(w.start, w.end) for w in live] == [(3.0 * k, 3.0 * k + 3) for k in range(6)]  # a stream: not
    assert all(torch.equal(a.frames, b.frames) for a, b in zip(as_file, live))
    stop = threading.Event()
    stream = iter_windows(video, 1, 1, 4, live=True, stop=stop)
    assert next(stream).start == 0
    stop.set()
    assert list(stream) == []


def test_damaged_packets_cost_their_frames_not_the_timeline(media, tmp_path):
    _, video, _ = media
    damaged = damage_packets(video, tmp_path / "damaged.mkv", range(52, 55))  # in the GOP of frames 50-59: 4-6 s
    got = list(iter_windows(damaged, 2, 2, 4))
    assert [(w.start, w.end) for w in got] == [(2.0 * k, 2.0 * k + 2) for k in range(10)]
    for w in got[:2] + got[3:]:
        assert frame_numbers(w.frames) == (window_times(w.start, w.end, 4) * FPS).floor().long().flatten().tolist()


def test_unreadable_and_unreachable_sources_are_one_video_error(media, tmp_path):
    root, video, _ = media
    with pytest.raises(VideoError, match=r"long.mp4: the window \(25 s\) is longer than the video \(20.00 s\)"):
        iter_windows(video, 25, 1, 4)
    with pytest.raises(VideoError, match="missing.mp4: no such video file"):
        iter_windows(tmp_path / "missing.mp4", 2, 2, 4)
    with pytest.raises(VideoError, match=r"^rtsp://127.0.0.1:9/x: cannot open the stream \(Connection refused\)$"):
        list(iter_windows("rtsp://127.0.0.1:9/x", 2, 2, 4, live=True))
    silent = socket.socket()  # accepts the connection, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/live.ts"
        started = time.monotonic()
        with pytest.raises(VideoError, match=rf"^{url}: cannot open the stream \(no answer within 1 s\)$"):
            list(iter_windows(url, 2, 2, 4, live=True, open_timeout=1))
        assert time.monotonic() - started < 5
    finally:
        silent.close()


# ----------------------------------------------------------------------------- the command line
def _rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_predict_window_prints_and_writes_a_timeline_covering_the_video(media, tmp_path, capsys):
    _, video, ckpt = media
    table = tmp_path / "timeline.csv"
    assert cli(["predict", str(video), "--checkpoint", str(ckpt), "--window", "3s", "--json", "--topk", "2",
                "--out", str(table), "--batch-size", "3"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert [(r["start"], r["end"]) for r in rows] == [(0, 3), (3, 6), (6, 9), (9, 12), (12, 15), (15, 18), (18, 20)]
    assert all(r["video"] == str(video) and len(r["top"]) == 2 and r["grid"] == "4x56x56" for r in rows)
    assert all(0 < r["top"][1]["prob"] <= r["top"][0]["prob"] < 1 for r in rows)
    lines = table.read_text().splitlines()
    assert lines[0].startswith("video,start,end,label,prob,top")
    assert [line.split(",")[1:5] for line in lines[1:]] == [
        [f"{r['start']:.3f}", f"{r['end']:.3f}", r["top"][0]["label"], f"{r['top'][0]['prob']:.5f}"] for r in rows]
    # several files: each its own timeline, a broken one an error row (exit 2), the others go on
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 50)
    assert cli(["predict", str(broken), str(video), "--checkpoint", str(ckpt), "--window", "10", "--stride", "6.5",
                "--json"]) == 2
    out = capsys.readouterr()
    assert [(r["start"], r["end"]) for r in _rows(out.out)] == [(0, 10), (6.5, 16.5), (13, 20)]  # 7 s tail: kept
    assert all(r["video"] == str(video) for r in _rows(out.out))
    assert "broken.mp4: not a readable video" in out.err


def test_predict_stream_of_a_local_file_gives_the_files_complete_windows(media, capsys):
    _, video, ckpt = media
    assert cli(["predict", str(video), "--checkpoint", str(ckpt), "--window", "3", "--json"]) == 0
    as_file = _rows(capsys.readouterr().out)
    assert cli(["predict", "--stream", str(video), "--checkpoint", str(ckpt), "--window", "3", "--json"]) == 0
    live = _rows(capsys.readouterr().out)
    assert len(live) == 6 and live == as_file[:6]  # the same windows, the same probabilities; no tail


def test_ctrl_c_ends_a_stream_cleanly_with_its_rows(media, tmp_path):
    """A pipe that delivers 30 s of video, then stays open with nothing more: the reader blocks,
    Ctrl-C ends the run at once, exit 0, the rows printed and written, no traceback."""
    _, _, ckpt = media
    minute = np.tile(numbered(FRAMES), (3, 1, 1, 1))
    long = write_video(tmp_path / "feed.mkv", minute, fps=FPS, gop=10, reproducible=False)
    data = long.read_bytes()
    fifo = tmp_path / "live"
    os.mkfifo(fifo)
    table = tmp_path / "rows.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "fluxvit", "predict", "--stream", str(fifo), "--checkpoint",
                             str(ckpt), "--window", "2", "--json", "--out", str(table), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    release = threading.Event()

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            release.wait(30)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        first = proc.stdout.readline()
        assert first.startswith("{"), proc.stderr.read() if proc.poll() is not None else first
        time.sleep(1.0)  # the rest of the data decoded: now blocked on the pipe
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rows = _rows(first + out)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped (Ctrl-C) after" in err
    assert len(rows) >= 2
    assert [(r["start"], r["end"]) for r in rows] == [(2.0 * k, 2.0 * k + 2) for k in range(len(rows))]
    assert _rows(table.read_text()) == rows


@pytest.mark.parametrize("args, problem", [
    (["--window", "30"], r"long.mp4: the window \(30 s\) is longer than the video \(20.00 s\)"),
    (["--window", "0"], "--window must be more than 0 seconds, got 0"),
    (["--window", "-1"], "--window must be more than 0 seconds, got -1"),
    (["--window", "nan"], "argument --window: must be a finite number of seconds, got 'nan'"),
    (["--window", "abc"], r"argument --window: 'abc' is not a number of seconds \(2, 2s, 1.5s\)"),
    (["--window", "2", "--stride", "0s"], "--stride must be more than 0 seconds, got 0"),
    (["--stride", "2"], "--stride goes with --window"),
    (["--window", "2", "--show-tokens", "t.png"], "--show-tokens is for whole videos"),
])
def test_bad_window_values_are_one_line_exit_2(media, capsys, args, problem):
    _, video, ckpt = media
    try:
        code = cli(["predict", str(video), "--checkpoint", str(ckpt), *args])
    except SystemExit as e:  # argparse's own refusals (a value that does not parse) exit from the parser
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert re.search(problem, err[0]), err[0]


@pytest.mark.parametrize("source, problem", [
    ("rtsp://127.0.0.1:9/x", "rtsp://127.0.0.1:9/x: cannot open the stream (Connection refused)"),
    ("/dev/no-such-video9", "/dev/no-such-video9: cannot open the stream (No such file or directory)"),
])
def test_an_unreachable_stream_is_one_line_exit_2(media, capsys, source, problem):
    _, _, ckpt = media
    assert cli(["predict", "--stream", source, "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fluxvit predict: error: {problem}"]
