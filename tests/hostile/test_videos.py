"""Hostile videos through the reader, the datasets, ``fluxvit predict`` and ``fluxvit eval``.

A broken file ends in one line naming the file and the problem: a :class:`VideoError` in the
library, one stderr line and exit 2 from predict (which still predicts the other videos),
a skipped-and-counted video in eval. Odd but valid files decode to the frames they hold.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fluxvit.data.annotations import VideoRecord
from fluxvit.data.datasets import BrokenClip, SkipBroken, VideoViewDataset
from fluxvit.data.sources import VideoFileSource
from fluxvit.data.transforms import EvalTransform
from fluxvit.data.video import PyAVReader
from fluxvit.errors import VideoError
from fluxvit.flux.grid import Grid
from tests.data.conftest import frame_ids

from .conftest import UNPRIVILEGED, assert_user_error, run_process, unreadable
from .media import BROKEN, ODD, clip


@pytest.fixture(params=sorted(BROKEN))
def broken(request, tmp_path) -> tuple[Path, str]:
    """(path, what its error must say) for each kind of broken video."""
    make, reason = BROKEN[request.param]
    return make(tmp_path), reason


@pytest.fixture(params=sorted(ODD))
def odd(request, tmp_path):
    return ODD[request.param](tmp_path)


def _assert_names(message: str, path: Path, reason: str) -> None:
    assert message.startswith(f"{path}: ") and reason in message and "\n" not in message, message


def test_reader_refuses_with_one_line(broken):
    path, reason = broken
    reader = PyAVReader()
    for call in (reader.num_frames, reader.probe, lambda p: reader.read(p, [0, 5, 11])):
        with pytest.raises(VideoError) as info:
            call(path)
        _assert_names(str(info.value), path, reason)


def test_datasets_raise_and_loaders_skip(broken):
    path, reason = broken
    records = [VideoRecord(path, 1, "hostile.csv:1")]
    with pytest.raises(VideoError) as info:
        VideoFileSource(records).clip(0, Grid(4, 28), torch.Generator().manual_seed(0), train=True)
    _assert_names(str(info.value), path, reason)
    views = VideoViewDataset(records, Grid(4, 28), num_clips=2)
    with pytest.raises(VideoError) as info:
        views[0]
    _assert_names(str(info.value), path, reason)
    marker = SkipBroken(views)[0]
    assert isinstance(marker, BrokenClip) and marker.index == 0
    _assert_names(marker.message, path, reason)


def test_predict_names_the_broken_video_and_still_predicts_the_good_one(broken, good_video, nano_ckpt, cli,
                                                                        tmp_path):
    path, reason = broken
    png = tmp_path / "pictures" / "tokens.png"
    run = cli("predict", good_video, path, "--checkpoint", nano_ckpt, "--budget", "40", "--json",
              "--show-tokens", png)
    line = assert_user_error(run, "predict", path, reason)
    assert line.startswith(f"fluxvit predict: error: {path}: ")
    (pred,) = run.json_lines()
    assert pred["video"] == str(good_video) and pred["tokens"] == 40 and len(pred["top"]) == 4
    assert sum(t["prob"] for t in pred["top"]) == pytest.approx(1.0, abs=1e-4)
    # the good video's picture is written, the broken one's is not, nothing half-way
    assert sorted(p.name for p in png.parent.iterdir()) == ["tokens_000.png"]


def test_eval_skips_counts_and_names_the_broken_video(broken, good_video, nano_ckpt, cli, tmp_path):
    path, reason = broken
    csv = tmp_path / "val.csv"
    csv.write_text(f"{good_video} 0\n{path} 1\n{good_video} 2\n")
    run = cli("eval", "--checkpoint", nano_ckpt, "--data", csv, "--views", "2x3", "--json")
    assert run.code == 0 and "Traceback" not in run.err
    (res,) = run.json_lines()
    assert (res["videos"], res["broken"], res["views"]) == (2, 1, 2 * 6)
    (line,) = run.err.strip().splitlines()
    assert line.startswith(f"skipped broken video: {path}: ") and reason in line


def test_eval_with_every_video_broken_is_one_line(tmp_path, nano_ckpt, cli):
    """No accuracy to report and no features to write: exit 2, nothing written."""
    make, reason = BROKEN["truncated_50"]
    csv = tmp_path / "val.csv"
    csv.write_text(f"{make(tmp_path)} 0\n{tmp_path / 'absent.mp4'} 1\n")
    features = tmp_path / "features.safetensors"
    run = cli("eval", "--checkpoint", nano_ckpt, "--data", csv, "--json", "--save-features", features)
    assert_user_error(run, "eval", f"{csv}: none of its 2 videos could be read (the first: ", reason)
    assert run.out == "" and sorted(p.name for p in tmp_path.iterdir()) == ["cut_50.mp4", "val.csv", "whole.mp4"]


def test_odd_videos_decode_to_their_frames(odd):
    reader = PyAVReader()
    info = reader.probe(odd.path)
    assert (info.num_frames, info.height, info.width) == (odd.frames, odd.height, odd.width)
    wanted = [odd.frames - 1, 0, odd.frames // 2, 0]
    frames = reader.read(odd.path, wanted)
    assert frames.shape == (4, odd.height, odd.width, 3) and frames.dtype == torch.uint8
    if odd.coded:
        assert frame_ids(frames) == [odd.first + w for w in wanted]
    else:  # grey: luma only, R = G = B, brightening with the coded frames' red ramp
        assert torch.equal(frames[..., 0], frames[..., 2])
        assert frames[0].float().mean() > frames[2].float().mean() + 10
    for strategy in ("seek", "sequential"):
        assert torch.equal(PyAVReader(strategy).read(odd.path, wanted), frames)


def test_odd_videos_make_clips_on_any_grid(odd):
    records = [VideoRecord(odd.path, 2, "odd.csv:1")]
    video, label = VideoFileSource(records).clip(0, Grid(6, 42, 28), torch.Generator().manual_seed(3), train=True)
    assert video.shape == (3, 6, 42, 28) and torch.isfinite(video).all() and label == 2
    views = VideoViewDataset(records, Grid(4, 56), num_clips=2, transform=EvalTransform(num_crops=3))[0]
    assert views.video.shape == (6, 3, 4, 56, 56) and torch.isfinite(views.video).all()


def test_odd_videos_are_predicted_and_evaluated(odd, nano_ckpt, cli, tmp_path):
    run = cli("predict", odd.path, "--checkpoint", nano_ckpt, "--views", "2x3", "--json")
    assert run.code == 0 and run.err == ""
    (pred,) = run.json_lines()
    assert pred["video"] == str(odd.path) and pred["grid"] == "4x56x56"
    csv = tmp_path / "odd.csv"
    csv.write_text(f"{odd.path} 3\n")
    run = cli("eval", "--checkpoint", nano_ckpt, "--data", csv, "--views", "1x1", "--json")
    assert run.code == 0 and run.err == ""
    (res,) = run.json_lines()
    assert (res["videos"], res["broken"]) == (1, 0)


def test_every_broken_kind_at_once_through_the_real_entry_point(tmp_path, good_video, nano_ckpt):
    """One process, every broken kind: each named on its own line, the good video predicted."""
    paths = []
    for i, name in enumerate(sorted(BROKEN)):
        folder = tmp_path / f"{i:02d}"
        folder.mkdir()
        paths.append(BROKEN[name][0](folder))
    run = run_process("predict", *paths, good_video, "--checkpoint", nano_ckpt, "--json")
    assert run.code == 2 and "Traceback" not in run.err
    lines = run.err.strip().splitlines()
    assert len(lines) == len(paths)
    for line, path, name in zip(lines, paths, sorted(BROKEN)):
        assert line.startswith(f"fluxvit predict: error: {path}: ") and BROKEN[name][1] in line
    assert [p["video"] for p in run.json_lines()] == [str(good_video)]
    csv = tmp_path / "all.csv"
    csv.write_text("".join(f"{p} {i % 4}\n" for i, p in enumerate([good_video, *paths])))
    run = run_process("eval", "--checkpoint", nano_ckpt, "--data", csv, "--views", "1x1", "--json")
    assert run.code == 0 and "Traceback" not in run.err
    (res,) = run.json_lines()
    assert (res["videos"], res["broken"]) == (1, len(paths))
    assert sum(line.startswith("skipped broken video: ") for line in run.err.splitlines()) == len(paths)


def test_unreadable_video_csv_and_checkpoint(tmp_path, good_video, nano_ckpt):
    """Files without read permission (as root: in a child without CAP_DAC_OVERRIDE)."""
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(good_video.read_bytes())
    unreadable(secret)
    run = run_process("predict", secret, good_video, "--checkpoint", nano_ckpt, prefix=UNPRIVILEGED)
    assert_user_error(run, "predict", secret, "Permission denied")
    assert run.out.startswith(f"{good_video}: ")
    csv = tmp_path / "val.csv"
    csv.write_text(f"{good_video} 0\n{secret} 1\n")
    run = run_process("eval", "--checkpoint", nano_ckpt, "--data", csv, "--views", "1x1", "--json",
                      prefix=UNPRIVILEGED)
    assert run.code == 0 and run.json_lines()[0]["broken"] == 1 and "Traceback" not in run.err
    assert f"skipped broken video: {secret}: " in run.err
    unreadable(csv)
    run = run_process("eval", "--checkpoint", nano_ckpt, "--data", csv, prefix=UNPRIVILEGED)
    assert_user_error(run, "eval", csv, "Permission denied")
    ckpt = tmp_path / "locked.safetensors"
    ckpt.write_bytes(nano_ckpt.read_bytes())
    unreadable(ckpt)
    run = run_process("predict", good_video, "--checkpoint", ckpt, prefix=UNPRIVILEGED)
    assert_user_error(run, "predict", ckpt, "Permission denied")


def test_a_video_list_of_spaces_unicode_and_lying_extensions_is_read(tmp_path, nano_ckpt, cli):
    """A CSV whose paths hold spaces and unicode, resolved against --data-root."""
    folder = tmp_path / "root dir" / "clips ü"
    folder.mkdir(parents=True)
    clip(folder, "a b.mp4", 6)
    (folder / "really mp4.avi").write_bytes((folder / "a b.mp4").read_bytes())
    csv = tmp_path / "list.csv"
    csv.write_text("clips ü/a b.mp4 0\nclips ü/really mp4.avi\t1\nclips ü/a b.mp4,2\n")
    run = cli("eval", "--checkpoint", nano_ckpt, "--data", csv, "--data-root", tmp_path / "root dir",
              "--views", "1x1", "--json")
    assert run.code == 0 and run.err == ""
    assert (run.json_lines()[0]["videos"], run.json_lines()[0]["broken"]) == (3, 0)
