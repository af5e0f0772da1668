"""Load: ``fluxvit predict`` over 200 videos in one call and ``fluxvit eval`` over a 200-line CSV,
10% of them broken. Both finish, name every broken video, and hold memory flat: the peak RSS of
the command (a real process, measured by the kernel through ``os.wait4``) grows by less than
20 MB from 50 videos to 200.

Why 20 MB: a leak of one decoded clip per video (8 frames of 56x56 RGB: 75 KB as uint8, 300 KB
as the float view) would add 11-45 MB over the 150 extra videos, while allocator noise between
two runs of this size stays within a few MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ENV, ROOT
from .media import BROKEN, clip

pytestmark = pytest.mark.load

N = 200
BROKEN_EVERY = 10  # every 10th video is broken: 10%
BROKEN_KINDS = ["missing", "truncated_50", "text_renamed_mp4", "faststart_truncated_50", "empty"]
RSS_GROWTH_LIMIT_KB = 20 * 1024


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[tuple[Path, int, bool]]:
    """(path, label, broken) for N small videos (8 frames, 56x56); every 10th one broken."""
    root = tmp_path_factory.mktemp("load")
    out = []
    for i in range(N):
        if i % BROKEN_EVERY == BROKEN_EVERY - 1:
            folder = root / f"broken_{i:03d}"
            folder.mkdir()
            path = BROKEN[BROKEN_KINDS[(i // BROKEN_EVERY) % len(BROKEN_KINDS)]][0](folder)
            out.append((path, i % 4, True))
        else:
            out.append((clip(root, f"v{i:03d}.mp4", 8, 56, 56), i % 4, False))
    return out


def _measured(args: list[object], workdir: Path) -> tuple[int, str, str, int]:
    """Run ``fluxvit ARGS``; (exit code, stdout, stderr, peak RSS in kB of that process alone)."""
    out, err = workdir / "stdout.txt", workdir / "stderr.txt"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "fluxvit", *map(str, args)], cwd=ROOT, env=ENV, stdout=fo,
                                stderr=fe)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out.read_text(), err.read_text(), usage.ru_maxrss


def _predict(videos, nano_ckpt, workdir):
    code, out, err, rss = _measured(["predict", *(p for p, _, _ in videos), "--checkpoint", nano_ckpt,
                                     "--views", "2x1", "--json"], workdir)
    assert "Traceback" not in err
    broken = [p for p, _, b in videos if b]
    assert code == (2 if broken else 0)
    predicted = [json.loads(line)["video"] for line in out.splitlines()]
    assert predicted == [str(p) for p, _, b in videos if not b]  # every good one, in order
    errors = err.strip().splitlines() if err.strip() else []
    assert len(errors) == len(broken)
    for line, path in zip(errors, broken):
        assert line.startswith(f"fluxvit predict: error: {path}: ")
    return rss


def _eval(videos, nano_ckpt, workdir):
    csv = workdir / "val.csv"
    csv.write_text("".join(f"{p} {label}\n" for p, label, _ in videos))
    code, out, err, rss = _measured(["eval", "--checkpoint", nano_ckpt, "--data", csv, "--views", "2x1", "--json"],
                                    workdir)
    assert code == 0 and "Traceback" not in err
    res = json.loads(out)
    broken = [p for p, _, b in videos if b]
    assert (res["videos"], res["broken"], res["views"]) == (len(videos) - len(broken), len(broken),
                                                             2 * (len(videos) - len(broken)))
    skipped = [line for line in err.splitlines() if line.startswith("skipped broken video: ")]
    assert sorted(skipped) == sorted(f"skipped broken video: {m}" for m in res["broken_videos"])
    assert [m.split(": ")[0] for m in res["broken_videos"]] == [str(p) for p in broken]
    return rss


@pytest.mark.parametrize("command", [_predict, _eval], ids=["predict", "eval"])
def test_200_videos_with_10_percent_broken_in_flat_memory(command, videos, nano_ckpt, tmp_path, record_property):
    small = tmp_path / "small"
    large = tmp_path / "large"
    small.mkdir()
    large.mkdir()
    rss_50 = command(videos[:50], nano_ckpt, small)
    rss_200 = command(videos, nano_ckpt, large)
    record_property("peak_rss_kb", {"50": rss_50, "200": rss_200})
    print(f"\n{command.__name__[1:]}: peak RSS {rss_50} kB for 50 videos, {rss_200} kB for 200")
    assert rss_200 - rss_50 < RSS_GROWTH_LIMIT_KB, (rss_50, rss_200)
