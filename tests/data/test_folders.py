"""Datasets from a user's own folders (FOLDER/CLASS/video.mp4) and the list formats beside them:
CSVs with a header, class names as labels, the release's SSv2 lists; and the doors that take them
(read_annotations, the trainer's csv_sources, fluxvit eval --data)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import fluxvit
from fluxvit.cli import main
from fluxvit.data.annotations import find_videos, read_annotations
from fluxvit.data.encode import write_video
from fluxvit.data.sources import csv_sources
from fluxvit.data.transforms import TrainTransform
from fluxvit.errors import AnnotationError
from fluxvit.flux.grid import Grid


def _touch(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _video(path, seed: int, frames: int = 8, size: int = 56):
    """A tiny real video with frames of its own (the seed)."""
    rng = np.random.default_rng(seed)
    return write_video(path, rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8), fps=8, reproducible=False)


def test_a_folder_is_read_sorted_recursive_hidden_skipped_links_survived(tmp_path):
    root = tmp_path / "data"
    _touch(root / "zebra" / "a.MP4")  # the extension in any case
    _touch(root / "ant" / "x" / "y" / "b.mkv")  # deep below the class folder
    _touch(root / "ant" / "c.mp4")
    _touch(root / "ant" / ".hidden.mp4")
    _touch(root / "ant" / "notes.txt")
    _touch(root / ".git" / "objects" / "v.mp4")  # a hidden folder is no class
    _touch(root / "readme.mp4")  # outside any class folder: left out
    os.symlink(root / "ant", root / "ant" / "loop")  # a folder that contains itself
    os.symlink(tmp_path / "nowhere.mp4", root / "ant" / "dangling.mp4")
    os.symlink("self.mp4", root / "ant" / "self.mp4")  # a link loop

    ann = read_annotations(root)
    assert ann.classes == ("ant", "zebra") and ann.csv == root
    assert [(r.path.relative_to(root).as_posix(), r.label) for r in ann] == [
        ("ant/c.mp4", 0), ("ant/dangling.mp4", 0), ("ant/self.mp4", 0), ("ant/x/y/b.mkv", 0), ("zebra/a.MP4", 1)]
    assert find_videos(root / "ant") == [r.path for r in ann.records[:4]]
    # a class list known from elsewhere (the model's, the training data's) numbers the folders
    known = read_annotations(root, known_classes=["zebra", "cow", "ant"])
    assert known.classes == ("zebra", "cow", "ant") and [r.label for r in known] == [2, 2, 2, 2, 0]
    with pytest.raises(AnnotationError, match=r"ant: class 'ant' is not one of the 2 known classes \(zebra, cow\)"):
        read_annotations(root, known_classes=["zebra", "cow"])


def test_the_listed_videos_cap(tmp_path, monkeypatch):
    for i in range(3):
        _touch(tmp_path / "d" / f"k{i % 2}" / f"v{i}.mp4")
    monkeypatch.setenv("FLUXVIT_MAX_LISTED_VIDEOS", "2")
    with pytest.raises(AnnotationError, match=r"3 videos listed is more than the cap of 2 \(raise it with "
                                              r"FLUXVIT_MAX_LISTED_VIDEOS\)"):
        read_annotations(tmp_path / "d")
    csv = _touch(tmp_path / "list.txt", "a.mp4 0\nb.mp4 1\nc.mp4 1\n")
    with pytest.raises(AnnotationError, match="list.txt: 3 videos listed is more than the cap of 2"):
        read_annotations(csv)


def test_lists_with_headers_names_and_the_ssv2_format(tmp_path):
    csv = _touch(tmp_path / "with_header.csv", "Path,duration,label\nv/a b.mp4,3.5,walk\n\"v/c,d.mp4\",2,run\n"
                                               "v/e.mp4,1,walk\n")
    ann = read_annotations(csv)
    assert ann.classes == ("run", "walk")  # names without a classes.txt: numbered in sorted order
    assert [(r.path.relative_to(tmp_path).as_posix(), r.label, r.source) for r in ann] == [
        ("v/a b.mp4", 1, f"{csv}:2"), ("v/c,d.mp4", 0, f"{csv}:3"), ("v/e.mp4", 1, f"{csv}:4")]
    ids = read_annotations(_touch(tmp_path / "ids.tsv", "path\tlabel\nx.mp4\t1\ny.mp4\t0\n"))
    assert [r.label for r in ids] == [1, 0] and ids.classes is None
    # the release's SSv2 lists: `path label` for videos, `path num_frames label` for frame folders
    ssv2 = read_annotations(_touch(tmp_path / "ssv2.txt", "78687.webm 12\n42326 47 173\n"))
    assert [(r.path.name, r.label) for r in ssv2] == [("78687.webm", 12), ("42326", 173)]
    # names numbered by known classes (the model's) when the list brings no class list
    known = read_annotations(csv, known_classes=["walk", "jump", "run"])
    assert [r.label for r in known] == [0, 2, 0] and known.classes == ("walk", "jump", "run")


@pytest.mark.parametrize("text, problem", [
    ("label,youtube_id,time_start,time_end,split\nabseiling,0347ZoDXyP0,14,24,train\n",
     ":1: a header line without 'path' column (its columns: label, youtube_id, time_start, time_end, split)"),
    ("video,class\nv.mp4,walk\n", ":1: a header line without 'path' and 'label' columns"),
    ("path,label\nv.mp4\n", ":2: expected at least 2 fields"),
    ("a.mp4 0\nb.mp4 walk\n", ":2: label 'walk' is not an integer (the first label is an id"),
])
def test_bad_lists_name_file_and_line(tmp_path, text, problem):
    csv = _touch(tmp_path / "bad.csv", text)
    with pytest.raises(AnnotationError) as caught:
        read_annotations(csv)
    assert str(caught.value).startswith(f"{csv}{problem}") and "\n" not in str(caught.value)


def test_the_trainer_reads_folders_val_numbered_by_train(tmp_path):
    for c, name in enumerate(["cat", "dog", "eel"]):
        for i in range(2):
            _video(tmp_path / "train" / name / f"{i}.mp4", 10 * c + i)
    _video(tmp_path / "val" / "eel" / "e.mp4", 100)  # val lacks two classes: still eel = 2
    _video(tmp_path / "val" / "cat" / "c.mp4", 101)
    train, val = csv_sources(str(tmp_path / "train"), str(tmp_path / "val"), None, TrainTransform(flip=0.0))
    assert train.classes == val.classes == ["cat", "dog", "eel"]
    assert [r.label for r in train.records] == [0, 0, 1, 1, 2, 2]
    assert [(r.path.name, r.label) for r in val.records] == [("c.mp4", 0), ("e.mp4", 2)]
    video, label = train.clip(3, Grid(4, 56), torch.Generator().manual_seed(0), train=True)
    assert video.shape == (3, 4, 56, 56) and label == 1 and torch.isfinite(video).all()


def test_eval_takes_a_folder_numbered_as_the_model(tmp_path, capsys):
    classes = ["cat", "dog", "eel"]
    for name, seed in (("eel", 1), ("eel", 2), ("cat", 3)):  # two of the model's three classes
        _video(tmp_path / "data" / name / f"{seed}.mp4", seed)
    torch.manual_seed(0)
    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=3, depth=2, default_grid=(4, 56))
    ckpt = fluxvit.save_checkpoint(model, tmp_path / "nano.safetensors", classes=classes)
    rc = main(["eval", "--checkpoint", str(ckpt), "--data", str(tmp_path / "data"), "--views", "1x1", "--json",
               "--device", "cpu"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    import json

    assert json.loads(out.out)["videos"] == 3


@pytest.mark.parametrize("case, problem", [
    ("empty", "no class folders"),
    ("one_class", "only one class folder ('cat'); classification needs at least two classes"),
    ("empty_class", "dog: class folder without videos"),
    ("video_file", "a video file, not an annotation list or a folder of class folders"),
])
def test_bad_folders_are_one_line_exit_2(tmp_path, capsys, case, problem):
    root = tmp_path / "data"
    root.mkdir()
    if case in ("one_class", "empty_class"):
        _touch(root / "cat" / "a.mp4")
    if case == "empty_class":
        _touch(root / "dog" / "readme.txt")
    if case == "video_file":
        root = _touch(tmp_path / "clip.mp4")
    rc = main(["prepare", str(root), str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and problem in err and "\n" not in err and err.startswith("fluxvit prepare: error: ")
    assert not (tmp_path / "out").exists()  # refused before anything was written
