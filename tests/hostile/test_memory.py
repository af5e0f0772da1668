"""Peak memory of real ``fluxvit predict`` and ``fluxvit eval`` processes on hostile video sets.

Each command runs as its own process and its peak resident set is read from the kernel when it
exits (``os.wait4`` in a small launcher: that process alone, not this test runner). The bound is
1.5 GB, for a decompression bomb (~200 KB of H.264 that decodes to four 8192x8192 frames, 805 MB
as RGB, several GB once a clip is assembled and normalised) and for 50 long low-resolution videos
(4000 frames each, each its own entry in the reader's index cache). The bomb is refused, the long
videos predicted and evaluated. Measured on 2 CPU cores: ~430 MB with the bomb (FFmpeg decodes
one 8192x8192 frame while opening the file, before the header check can refuse it), ~295 MB for
the long videos alone, ~290 MB for one small video.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from fluxvit.data.video import PyAVReader

from .conftest import ENV, ROOT, CliRun
from .media import bomb_bytes, encode

PEAK_RSS_BOUND = 1.5e9
LONG_FRAMES, LONG_VIDEOS = 4000, 50


# Forks and execs ``argv[2:]``, writes its peak RSS in KB (from wait4) to ``argv[1]``, exits with
# its code. A small process in between: Linux counts the RSS a child had before exec (a copy of
# its parent, this whole test runner) in its peak, so the measured process is forked from this one.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(*args: object, timeout: float = 180) -> tuple[CliRun, int]:
    """``python -m fluxvit ARGS`` as a process: what it did, and its peak RSS in bytes (the
    largest of it and any worker it waited for)."""
    env = {k: v for k, v in ENV.items() if not k.startswith("FLUXVIT_MAX_")}  # the default caps
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "maxrss"
        proc = subprocess.run([sys.executable, "-c", LAUNCHER, report, sys.executable, "-m", "fluxvit",
                               *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        peak_kb = int(report.read_text())  # Linux reports kilobytes
    return CliRun(proc.returncode, proc.stdout, proc.stderr), peak_kb * 1024


@pytest.fixture(scope="module")
def hostile_set(tmp_path_factory) -> tuple[Path, list[Path]]:
    """The bomb, and 50 names for one 4000-frame 32x32 video (hard links: distinct paths, so
    distinct index cache entries, for one encode)."""
    d = tmp_path_factory.mktemp("memory")
    bomb = d / "bomb.mp4"
    bomb.write_bytes(bomb_bytes())
    frames = np.zeros((LONG_FRAMES, 32, 32, 3), np.uint8)
    frames[..., 0] = (np.arange(LONG_FRAMES) % 200)[:, None, None]
    frames[..., 1] = 90
    source = encode(d / "long_source.mp4", frames, gop=250)
    longs = []
    for i in range(LONG_VIDEOS):
        os.link(source, d / f"long_{i:02d}.mp4")
        longs.append(d / f"long_{i:02d}.mp4")
    return bomb, longs


def test_the_long_videos_are_fifty_index_cache_entries(hostile_set):
    bomb, longs = hostile_set
    reader = PyAVReader()
    assert all(reader.num_frames(p) == LONG_FRAMES for p in longs)
    assert len(reader._cache) == LONG_VIDEOS and reader.cache_bytes > LONG_VIDEOS * LONG_FRAMES * 8


@pytest.mark.slow  # three real processes, ~20 s
def test_predict_and_eval_stay_under_the_memory_bound(hostile_set, nano_ckpt, tmp_path, capsys):
    bomb, longs = hostile_set
    peaks = {}
    run, peaks["predict bomb"] = run_measured("predict", bomb, "--checkpoint", nano_ckpt, "--json")
    assert run.code == 2 and "Traceback" not in run.err
    assert run.err.strip() == (f"fluxvit predict: error: {bomb}: 67108864 pixels per frame is more than the cap "
                               f"of 16777216 (raise it with FLUXVIT_MAX_FRAME_PIXELS)")

    run, peaks["predict 50 long"] = run_measured("predict", *longs, "--checkpoint", nano_ckpt, "--json",
                                                 "--workers", "0")
    assert run.code == 0 and run.err == ""
    assert [p["video"] for p in run.json_lines()] == [str(p) for p in longs]

    csv = tmp_path / "val.csv"
    csv.write_text("".join(f"{p} {i % 4}\n" for i, p in enumerate([bomb, *longs])))
    run, peaks["eval bomb + 50 long"] = run_measured("eval", "--checkpoint", nano_ckpt, "--data", csv,
                                                     "--views", "1x1", "--json")
    assert run.code == 0 and "Traceback" not in run.err, run.err
    (res,) = run.json_lines()
    assert (res["videos"], res["broken"]) == (LONG_VIDEOS, 1)
    assert "bomb.mp4: 67108864 pixels per frame is more than the cap" in run.err  # the summary shortens paths

    with capsys.disabled():
        print("\npeak RSS: " + ", ".join(f"{name} {peak / 1e6:.0f} MB" for name, peak in peaks.items()))
    assert max(peaks.values()) < PEAK_RSS_BOUND, peaks
