"""``fluxvit features``: clip embeddings and token features of labelled or unlabelled videos."""

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import fluxvit
from fluxvit.cli import main as cli
from fluxvit.evaluate.predict import read_views
from fluxvit.evaluate.runner import Views
from fluxvit.flux.grid import Grid

from .conftest import CLASSES


def _metadata(path):
    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_token_features_match_the_model_and_their_positions(setup, tmp_path, capsys):
    """From an annotation file with --tokens and a budget: every row's pooled feature is the mean
    over its views of the projector's output, the token features are the last block's (class token
    left out), the kept indices are the selector's, and each position is its index's (t, y, x)."""
    _, data, ckpt = setup
    out = tmp_path / "f.safetensors"
    assert cli(["features", str(data.val_csv), "--checkpoint", str(ckpt), "--budget", "24", "--views", "2x1",
                "--tokens", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    t = load_file(str(out))
    assert summary["rows"] == 8 and summary["broken"] == 0
    assert t["features"].shape == (8, 192) and t["tokens"].shape == (8, 2, 24, 96)
    assert t["kept"].shape == (8, 2, 24) and t["positions"].shape == (8, 2, 24, 3)
    assert t["labels"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and t["index"].tolist() == list(range(8))
    meta = _metadata(out)
    assert meta["grid"] == "4x56" and meta["budget"] == "24" and meta["views"] == "2x1"
    assert meta["model"] == "fluxvit_nano_patch14" and json.loads(meta["classes"]) == CLASSES
    videos = json.loads(meta["videos"])
    assert len(videos) == 8 and videos[0].endswith(".mp4")

    model = fluxvit.load_checkpoint(ckpt).eval()
    grid = Grid(4, 56, budget=24)
    for row in (0, 5):
        clip = read_views(videos[row], grid, Views(2, 1))
        with torch.no_grad():
            tokens, kept = model.forward_features(clip, num_tokens=24, return_indices=True)
            emb = model.forward_head(tokens, int(meta["head"]), pre_logits=True)
        assert torch.allclose(t["features"][row], emb.mean(0), atol=1e-5)
        assert torch.allclose(t["tokens"][row], tokens[:, 1:], atol=1e-5)
        assert torch.equal(t["kept"][row], kept)
    flat = t["kept"]  # grid 4x56: 4 frames of 4x4 patches
    assert torch.equal(t["positions"][..., 0], flat // 16)
    assert torch.equal(t["positions"][..., 1], (flat % 16) // 4)
    assert torch.equal(t["positions"][..., 2], flat % 4)
    assert int(t["positions"][..., 0].max()) == 3 and int(t["positions"][..., 1:].max()) == 3


def test_unlabelled_folder_skips_and_names_broken_videos(setup, tmp_path, capsys):
    """A folder of videos needs no labels: every readable video gets a row, the broken one is
    skipped, counted and named; without a budget the positions cover the whole grid in order."""
    _, data, ckpt = setup
    folder = tmp_path / "clips"
    shutil.copytree(data.val_csv.parent / "val", folder)
    (folder / "zz_broken.mp4").write_bytes(b"not a video" * 20)
    out = tmp_path / "u.safetensors"
    assert cli(["features", str(folder), "--checkpoint", str(ckpt), "--tokens", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "9 videos (1 broken)" in captured.out and "zz_broken.mp4" in captured.err
    t = load_file(str(out))
    assert "labels" not in t and "kept" not in t
    assert t["tokens"].shape == (8, 1, 64, 96)
    assert t["positions"][0, 0].tolist()[:5] == [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 0, 3], [0, 1, 0]]
    meta = _metadata(out)
    videos, broken = json.loads(meta["videos"]), json.loads(meta["broken"])
    bad = [i for i, v in enumerate(videos) if v.endswith("zz_broken.mp4")]
    assert len(videos) == 9 and len(bad) == 1
    assert t["index"].tolist() == [i for i in range(9) if i != bad[0]]  # every input but the broken one
    assert len(broken) == 1 and "zz_broken.mp4" in broken[0]


@pytest.mark.parametrize("case", ["suffix", "exists", "input", "cap", "bad_views", "parent_is_a_file"])
def test_bad_outputs_and_values_are_one_line(setup, tmp_path, capsys, monkeypatch, case):
    _, data, ckpt = setup
    out, args = tmp_path / "f.safetensors", []
    expected = {"suffix": ".safetensors file", "exists": "exists", "input": "is an input of this command",
                "cap": "FLUXVIT_MAX_FEATURE_BYTES", "bad_views": "views 0x1",
                "parent_is_a_file": "is not a folder this process may write in"}[case]
    if case == "suffix":
        out = tmp_path / "f.pt"
    elif case == "exists":
        out.write_bytes(b"earlier")
    elif case == "input":
        out = ckpt
    elif case == "cap":
        monkeypatch.setenv("FLUXVIT_MAX_FEATURE_BYTES", "100000")
        args = ["--tokens"]
    elif case == "parent_is_a_file":  # said before the extraction, not when the file is written
        out = data.val_csv / "f.safetensors"
    else:
        args = ["--views", "0x1"]
    before = out.read_bytes() if out.exists() else None
    assert cli(["features", str(data.val_csv), "--checkpoint", str(ckpt), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err
    assert (out.read_bytes() if out.exists() else None) == before  # nothing written or replaced


def test_window_features_cover_the_video_one_row_per_window(setup, tmp_path, capsys):
    """--window: one row per window of each video (its start and end in seconds, the video's
    input index), the windows covering the video, each row the clip embedding of that window's
    frames exactly as iter_windows decodes them; a broken input is named and skipped."""
    import numpy as np

    from fluxvit.data.encode import write_video
    from fluxvit.data.windows import iter_windows, plan_windows
    from fluxvit.evaluate.predict import clip_views

    _, _, ckpt = setup
    rng = np.random.default_rng(0)
    long = write_video(tmp_path / "long.mp4", rng.integers(0, 255, (65, 64, 64, 3), dtype=np.uint8), fps=10)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"garbage" * 30)
    out = tmp_path / "w.safetensors"
    assert cli(["features", str(long), str(broken), "--checkpoint", str(ckpt), "--window", "2s", "--stride", "1.5",
                "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "broken.mp4" in captured.err
    t = load_file(str(out))
    plan = plan_windows(6.5, 2.0, 1.5)
    assert len(plan) >= 4 and t["features"].shape == (len(plan), 192)
    assert t["index"].tolist() == [0] * len(plan)
    starts, ends = t["start_s"].tolist(), t["end_s"].tolist()
    assert starts[0] == 0.0 and all(b - a == pytest.approx(1.5) for a, b in zip(starts, starts[1:]))
    assert ends[-1] == pytest.approx(6.5, abs=0.11)  # the last frame's end: 65 frames at 10 fps
    meta = _metadata(out)
    assert meta["window_s"] == "2" and meta["stride_s"] == "1.5" and len(json.loads(meta["broken"])) == 1

    model = fluxvit.load_checkpoint(ckpt).eval()
    grid = Grid(4, 56)
    for row, w in enumerate(iter_windows(long, 2.0, 1.5, grid.frames, 1, grid.height)):
        with torch.no_grad():
            emb = model.forward_head(model.forward_features(clip_views(w.frames[None], grid, Views())), pre_logits=True)
        assert (w.start, w.end) == (pytest.approx(starts[row]), pytest.approx(ends[row]))
        assert torch.allclose(t["features"][row], emb[0], atol=1e-5)


@pytest.mark.parametrize("args, expected", [
    (["--window", "0"], "window"), (["--stride", "1"], "--stride goes with --window"),
    (["--window", "2", "--workers", "2"], "--workers is for whole videos"), (["--window", "abc"], "--window"),
    (["--window", "100"], "longer than the video")])
def test_bad_window_values_are_one_line(setup, tmp_path, capsys, args, expected):
    _, data, ckpt = setup
    video = next((data.val_csv.parent / "val").rglob("*.mp4"))
    out = tmp_path / "f.safetensors"
    try:
        code = cli(["features", str(video), "--checkpoint", str(ckpt), "--out", str(out), *args])
    except SystemExit as e:  # argparse's own refusal of a value it cannot read
        code = e.code
    err = capsys.readouterr().err.strip()
    if expected == "longer than the video":  # a video too short for the window: broken, so nothing to write
        assert code == 2 and "longer than" in err and not out.exists()
        return
    assert code == 2 and len(err.splitlines()) == 1 and expected in err and not out.exists()
