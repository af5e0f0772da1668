"""``fluxvit prepare``: broken, too short and duplicate files left out and tabled, a stratified split
reproducible by its seed, re-encoding, runs that continue and never rewrite, and bad inputs in one
line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from fluxvit.cli import main
from fluxvit.data import prepare
from fluxvit.data.annotations import read_annotations
from fluxvit.data.encode import write_video
from fluxvit.data.prepare import PrepareOptions, prepare_dataset, reencode_video, split_counts
from fluxvit.data.video import PyAVReader
from fluxvit.errors import ConfigError

CLASSES = ("cat", "dog", "eel")


def _video(path, seed: int, frames: int = 10, height: int = 32, width: int = 48):
    rng = np.random.default_rng(seed)
    return write_video(path, rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8), fps=10,
                       reproducible=False)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """3 classes x 4 good videos (10 frames, 48x32), and: a text file named .mp4 (cat), a truncated
    video (dog), a byte copy of eel/v1.mp4 and a 2-frame video (eel)."""
    root = tmp_path_factory.mktemp("prepare") / "src"
    for c, name in enumerate(CLASSES):
        for i in range(4):
            _video(root / name / f"v{i}.mp4", 10 * c + i)
    (root / "cat" / "notes.mp4").write_text("not a video\n" * 20)
    good = _video(root / "dog" / "sub" / "whole.mp4", 99).read_bytes()
    (root / "dog" / "sub" / "whole.mp4").write_bytes(good[: len(good) * 6 // 10])  # cut: its index is lost
    shutil.copy(root / "eel" / "v1.mp4", root / "eel" / "v1_copy.mp4")
    _video(root / "eel" / "short.mp4", 77, frames=2)
    return root


def _stats(folder):
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_prepare_leaves_out_bad_files_tables_them_and_splits_by_class(src, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["prepare", str(src), str(out), "--workers", "2", "--val-fraction", "0.25", "--test-fraction", "0.25"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"] == {"listed": 16, "kept": 12, "broken": 2, "short": 1, "duplicate": 1}
    assert summary["splits"] == {"train": 6, "val": 3, "test": 3}
    assert {n: (c["listed"], c["kept"], c["train"], c["val"], c["test"]) for n, c in summary["per_class"].items()} \
        == {"cat": (5, 4, 2, 1, 1), "dog": (5, 4, 2, 1, 1), "eel": (6, 4, 2, 1, 1)}
    assert summary["resolutions"] == {"48x32": 12} and summary["frames"] == {"total": 120, "mean": 10.0, "min": 10,
                                                                             "max": 10}
    assert summary["durations_s"]["total"] == pytest.approx(12.0, abs=0.01) and summary["reencoded"] is None
    # one table, each left-out file once with its reason
    rows = [line for line in printed.out.splitlines() if line.startswith("| ") and "file left out" not in line]
    assert [row.split(" | ")[0] for row in rows] == ["| cat/notes.mp4", "| dog/sub/whole.mp4", "| eel/short.mp4",
                                                     "| eel/v1_copy.mp4"]
    assert "broken: not a readable video" in rows[0] and "too short: 2 frames, fewer than --min-frames 8" in rows[2]
    assert "duplicate: same bytes as eel/v1.mp4" in rows[3]
    # the lists read back: absolute sources (no re-encoding), classes.txt beside them
    lists = {s: read_annotations(out / f"{s}.csv") for s in ("train", "val", "test")}
    assert all(a.classes == CLASSES for a in lists.values())
    assert [r.label for r in lists["train"]] == [0, 0, 1, 1, 2, 2] and [r.label for r in lists["val"]] == [0, 1, 2]
    assert all(r.path.is_absolute() and r.path.is_file() for a in lists.values() for r in a)
    names = [{r.path for r in a} for a in lists.values()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])  # each video in one split
    # the folder itself reads as the same dataset, broken files included (eval skips and counts them)
    folder = read_annotations(src)
    assert folder.classes == CLASSES and len(folder) == 16


def test_the_split_is_reproducible_with_the_seed(src, tmp_path):
    def val_of(seed, name):
        prepare_dataset(src, tmp_path / name, PrepareOptions(val_fraction=0.5, seed=seed), workers=0)
        return (tmp_path / name / "val.csv").read_text()

    first, again, other = val_of(3, "a"), val_of(3, "b"), val_of(4, "c")
    assert first == again and first != other
    assert [line.split("\t")[1] for line in first.splitlines()] == ["0", "0", "1", "1", "2", "2"]


def test_split_counts_put_train_first():
    assert split_counts(10, 0.2, 0.1) == (7, 2, 1)
    assert split_counts(3, 0.1, 0.1) == (1, 1, 1)  # a split with a share gets one while it can
    assert split_counts(2, 0.2, 0.2) == (1, 1, 0)
    assert split_counts(1, 0.5, 0.0) == (1, 0, 0)


def test_a_class_too_small_for_val_is_kept_in_train_with_a_warning(tmp_path, capsys):
    for name, n in (("a", 3), ("b", 1)):
        for i in range(n):
            _video(tmp_path / "src" / name / f"{i}.mp4", 50 + 5 * len(name) + i + 10 * n)
    assert main(["prepare", str(tmp_path / "src"), str(tmp_path / "out"), "--workers", "0"]) == 0
    err = capsys.readouterr().err
    assert "warning: class 'b' has 1 usable video: in train only, not in val" in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["per_class"]["b"]["train"] == 1 and summary["splits"] == {"train": 3, "val": 1, "test": 0}


def test_a_rerun_continues_and_a_finished_output_is_never_rewritten(src, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    options = PrepareOptions(short_side=16, keyframe_interval=4)
    real = prepare.reencode_video
    calls = []

    def killed_on_the_third(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(prepare, "reencode_video", killed_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(src, out, options, workers=0)
    copies = sorted((out / "videos").rglob("*.mp4"))
    assert len(copies) == 2 and not (out / "summary.json").exists() and not (out / "train.csv").exists()
    assert len(json.loads((out / ".prepare" / "probes.json").read_text())) == 16
    before = _stats(out / "videos")
    with pytest.raises(ConfigError, match=r"unfinished preparation with other arguments \(seed: 0 there, 1 now\)"):
        prepare_dataset(src, out, PrepareOptions(short_side=16, keyframe_interval=4, seed=1), workers=0)

    probed = []
    monkeypatch.setattr(prepare, "reencode_video", real)
    monkeypatch.setattr(prepare, "probe_video", lambda p: probed.append(p) or pytest.fail("probed again"))
    result = prepare_dataset(src, out, options, workers=0)
    assert probed == [] and not result.already
    assert result.summary["reencoded"] | {"codec": None} == {
        "codec": None, "short_side": 16, "keyframe_interval": 4, "encoded_now": 10, "kept_from_before": 2,
        "resolutions": {"24x16": 12}}
    assert {p: s for p, s in _stats(out / "videos").items() if p in before} == before  # the two copies untouched
    assert not (out / ".prepare").exists()

    finished = _stats(out)
    assert prepare_dataset(src, out, options, workers=0).already
    assert main(["prepare", str(src), str(out), "--short-side", "16", "--keyframe-interval", "4"]) == 0
    assert "already prepared with these arguments" in capsys.readouterr().out
    assert _stats(out) == finished  # nothing rewritten: same inodes, same mtimes
    with pytest.raises(ConfigError, match=r"finished preparation made with other arguments \(keyframe_interval: 4 "
                                          r"there, 16 now; short_side: 16 there, None now\)"):
        prepare_dataset(src, out, PrepareOptions(keyframe_interval=16), workers=0)
    assert _stats(out) == finished

    # the lists name the copies relative to OUT, so OUT can move
    moved = tmp_path / "moved"
    out.rename(moved)
    train = read_annotations(moved / "train.csv")
    assert len(train) == 9 and all(r.path.is_file() and moved / "videos" in r.path.parents for r in train)
    info = PyAVReader().probe(train[0].path)
    assert (info.width, info.height, info.num_frames) == (24, 16, 10)


def test_reencoding_sets_the_size_and_key_frames(tmp_path):
    src = _video(tmp_path / "long.mp4", 1, frames=40, height=60, width=80)
    dst = reencode_video(src, tmp_path / "out.mp4", short_side=30, keyframe_interval=8)
    before, after = PyAVReader().probe(src), PyAVReader().probe(dst)
    assert before.keyframe_interval == 40 and after.keyframe_interval == 8  # x264's default: one key frame here
    assert (after.width, after.height, after.num_frames) == (40, 30, 40)
    # never scaled up; the frames stay in order (each is its own noise, so close means the same)
    same = reencode_video(src, tmp_path / "same.mp4", short_side=320, keyframe_interval=8)
    a, b = PyAVReader().read(src, [5, 30]).float(), PyAVReader().read(same, [5, 30]).float()
    assert PyAVReader().probe(same).width == 80 and (a - b).abs().mean() < (a[0] - b[1]).abs().mean() / 2


def test_a_list_source_with_a_header_and_class_names(src, tmp_path):
    lines = ["path,label,note"] + [f"{src}/{c}/v{i}.mp4,{c},x" for c in ("dog", "eel") for i in range(3)]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    result = prepare_dataset(tmp_path / "list.csv", tmp_path / "out", PrepareOptions(val_fraction=0.34), workers=0)
    assert result.summary["classes"] == ["dog", "eel"] and result.summary["splits"]["val"] == 2
    assert (tmp_path / "out" / "classes.txt").read_text() == "dog\neel\n"


@pytest.mark.parametrize("case, problem", [
    ("src_in_out", "is inside OUT"),
    ("out_in_src", "is inside SRC"),
    ("out_not_empty", "not empty (it holds"),
    ("header", "a header line without 'path' and 'label' columns"),
    ("fractions", "--val-fraction 0.6 and --test-fraction 0.4 leave nothing to train on"),
    ("odd_side", "option '--short-side' must be even"),
    ("workers", "--workers: 100 worker processes is more than the cap of 64"),
])
def test_bad_inputs_are_one_line_exit_2(src, tmp_path, capsys, case, problem):
    args = {"src_in_out": [str(src), str(src.parent)], "out_in_src": [str(src), str(src / "cat" / "prepared")],
            "out_not_empty": [str(src), str(tmp_path)],
            "header": [str(tmp_path / "k400.csv"), str(tmp_path / "out")],
            "fractions": [str(src), str(tmp_path / "o"), "--val-fraction", "0.6", "--test-fraction", "0.4"],
            "odd_side": [str(src), str(tmp_path / "o"), "--short-side", "31"],
            "workers": [str(src), str(tmp_path / "o"), "--workers", "100"]}[case]
    (tmp_path / "k400.csv").write_text("video,class\nv.mp4,walk\n")
    rc = main(["prepare", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and problem in err and "\n" not in err, err
    assert not (src / "cat" / "prepared").exists() and not (tmp_path / "o").exists()
